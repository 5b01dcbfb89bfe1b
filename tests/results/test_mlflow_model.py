"""A network logged as an MLflow Model: loaded back with pyfunc, it predicts on raw images."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from mlflow import MlflowClient

from archsearch.net.model import build
from archsearch.net.spec import NetSpec
from archsearch.results.mlflow_model import NormalisedNet, log_member_model

TINY = {
    "name": "tiny",
    "input": [2, 6, 6],
    "num_classes": 3,
    "nodes": [
        {"name": "c1", "op": "conv", "out": 4, "kernel": 3},
        {"name": "f1", "op": "fire", "squeeze": 2, "expand": {1: 3, 3: 3}},
        {"name": "gap", "op": "global_avgpool"},
        {"name": "fc", "op": "linear", "out": "num_classes"},
    ],
}
MEAN, STD = (3.0, -1.0), (2.0, 0.5)


def test_normalised_net_feeds_the_net_what_the_trainer_fed_it() -> None:
    torch.manual_seed(0)
    net = build(NetSpec.from_dict(TINY)).eval()
    raw = torch.rand(5, 2, 6, 6) * 10
    normalised = (raw - torch.tensor(MEAN).view(1, -1, 1, 1)) / torch.tensor(STD).view(1, -1, 1, 1)
    with torch.no_grad():
        assert torch.allclose(NormalisedNet(net, MEAN, STD)(raw), net(normalised))


def test_a_logged_model_loads_with_pyfunc_and_predicts_raw_images(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("e", artifact_location=(tmp_path / "artifacts").as_uri())
    run_id = client.create_run(experiment).info.run_id
    torch.manual_seed(0)
    net = build(NetSpec.from_dict(TINY)).eval()
    example = (np.random.default_rng(0).random((2, 2, 6, 6)) * 10).astype(np.float32)

    logged = log_member_model(
        uri, experiment, run_id, net, mean=MEAN, std=STD, example=example, register_as="tiny-net"
    )

    assert logged.uri == f"runs:/{run_id}/model"
    assert logged.registered == "models:/tiny-net/1"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # runs:/ and models:/ URIs resolve through it
    model = mlflow.pyfunc.load_model(logged.uri)
    inputs = model.metadata.signature.inputs.inputs[0]
    assert tuple(inputs.shape) == (-1, 2, 6, 6) and str(inputs.type) == "float32"
    raw = (np.random.default_rng(1).random((7, 2, 6, 6)) * 10).astype(np.float32)  # another batch size
    with torch.no_grad():
        expected = NormalisedNet(net, MEAN, STD)(torch.from_numpy(raw)).numpy()
    np.testing.assert_allclose(model.predict(raw), expected, atol=1e-5)
    np.testing.assert_allclose(mlflow.pyfunc.load_model(logged.registered).predict(raw), expected, atol=1e-5)
    assert model.metadata.model_id == logged.model_id
