"""A finalized front member as an MLflow Model, ready for ``mlflow models serve`` and ``pyfunc``.

The trained network is wrapped in :class:`NormalisedNet`, which normalises raw images with the
training split's per-channel mean and standard deviation as the trainer did, so the model
takes images as they are read (N x C x H x W float32 in the dataset's pixel units, e.g. 0-255
for Fashion-MNIST, 0-16 for digits) and returns the class logits (N x num_classes). It is
logged with MLflow's PyTorch flavour in its ``pt2`` format (``torch.export``: the graph and the
weights, loadable without archsearch installed), with a tensor signature whose batch axis is
free and a two-image input example, as the ``model`` output of the member's MLflow run::

    mlflow models serve -m runs:/<run id>/model --env-manager local
    mlflow.pyfunc.load_model("runs:/<run id>/model").predict(images)   # numpy float32

Everything goes through an ``MlflowClient`` for the given tracking URI, with explicit run and
model ids: MLflow's global tracking URI and active run are never touched.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["MODEL_NAME", "LoggedModel", "NormalisedNet", "log_member_model", "raw_examples"]

#: The model's name in its run (``runs:/<run id>/model``).
MODEL_NAME = "model"
#: Images in the input example: two, so that ``torch.export`` keeps the batch axis free.
EXAMPLE_IMAGES = 2


class NormalisedNet(nn.Module):
    """``net`` on raw images: ``net((x - mean) / std)``, per channel, as the trainer fed it."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor([float(m) for m in mean]).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor([float(s) for s in std]).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.net((x - self.mean) / self.std)
        return logits


@dataclass(frozen=True)
class LoggedModel:
    """Where :func:`log_member_model` put the model."""

    model_id: str  # MLflow's logged-model id (``models:/<model_id>``)
    uri: str  # ``runs:/<run id>/model``
    registered: str = ""  # ``models:/<name>/<version>`` when registered, else ""


def raw_examples(data: Any, count: int = EXAMPLE_IMAGES) -> np.ndarray:
    """The first ``count`` validation images as raw pixels (float32), the model's input example."""
    normalised = data.val_x[0:count]
    normalised = torch.as_tensor(normalised).detach().cpu().float()
    mean = torch.tensor(data.mean).view(1, -1, 1, 1)
    std = torch.tensor(data.std).view(1, -1, 1, 1)
    return np.ascontiguousarray((normalised * std + mean).numpy().astype(np.float32))


def log_member_model(
    tracking_uri: str,
    experiment_id: str,
    run_id: str,
    net: nn.Module,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    example: np.ndarray,
    register_as: str | None = None,
    tags: Mapping[str, str] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> LoggedModel:
    """Log ``net`` (trained, normalising raw input) as the MLflow Model ``model`` of run ``run_id``.

    Args:
        tracking_uri, experiment_id, run_id: where (the run is the finalized member's).
        net: the trained network; a CPU copy in eval mode is exported, ``net`` is left as it is.
        mean, std: the training split's per-channel statistics (the dataset's ``mean``/``std``).
        example: raw input images (N x C x H x W float32, N >= 2 keeps the batch axis free).
        register_as: also register the model under this name (a new version per call).
        tags: tags of the logged model (and of its registered version).
        metadata: kept in the model's ``MLmodel`` file (``metadata:``).

    Returns where the model went. Raises whatever MLflow or ``torch.export`` raise.
    """
    import copy

    import mlflow.pytorch
    from mlflow import MlflowClient
    from mlflow.entities import LoggedModelOutput
    from mlflow.models import Model, infer_signature

    model = NormalisedNet(copy.deepcopy(net).float().cpu().eval(), mean, std).eval()
    # A net trained channels-last is exported in the default layout: what a caller hands in.
    model.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    inputs = np.ascontiguousarray(example, dtype=np.float32)
    with torch.no_grad():
        outputs = model(torch.from_numpy(inputs)).numpy()
    signature = infer_signature(inputs, outputs)
    # The registry is the tracking backend's own (by default MLflow would take the global URI's).
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    tag_values = {k: str(v) for k, v in (tags or {}).items()}
    logged = client.create_logged_model(
        experiment_id=experiment_id, name=MODEL_NAME, source_run_id=run_id, tags=tag_values or None
    )
    try:
        with tempfile.TemporaryDirectory(prefix="archsearch-model-") as tmp:
            path = Path(tmp) / MODEL_NAME
            description = Model(
                artifact_path=logged.artifact_location,
                run_id=run_id,
                model_id=logged.model_id,
                model_uuid=logged.model_id,
            )
            mlflow.pytorch.save_model(
                model,
                str(path),
                mlflow_model=description,
                signature=signature,
                input_example=inputs,
                # Named, so MLflow does not load the model in a subprocess to guess them.
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
                metadata=dict(metadata or {}),
                serialization_format="pt2",
            )
            client.log_model_artifacts(logged.model_id, str(path))
        client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])
        client.finalize_logged_model(logged.model_id, "READY")
    except BaseException:
        client.finalize_logged_model(logged.model_id, "FAILED")
        raise
    registered = ""
    if register_as:
        registered = _register(client, register_as, logged, run_id, tag_values)
    return LoggedModel(logged.model_id, f"runs:/{run_id}/{MODEL_NAME}", registered)


def _register(client: Any, name: str, logged: Any, run_id: str, tags: Mapping[str, str]) -> str:
    """A new version of registered model ``name`` (created if new); its ``models:/`` URI.

    The version's source is the logged model's artifact location, which is what MLflow would
    store for a ``models:/<model id>`` source after looking the model up through its *global*
    tracking URI (MLflow 3's registry store does so), which this process may not have set.
    """
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    version = client.create_model_version(
        name,
        source=logged.artifact_location,
        run_id=run_id,
        tags=dict(tags) or None,
        model_id=logged.model_id,
    )
    return f"models:/{name}/{version.version}"
