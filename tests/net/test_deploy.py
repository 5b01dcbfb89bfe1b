"""Deploy costs and exports: model_bytes, peak_activation_bytes, ONNX (+ int8), ONNX Runtime latency."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import weakref
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch

from archsearch.errors import ConfigError
from archsearch.hardware.latency import measure_latency, prepare_latency
from archsearch.hardware.ort import to_onnx_bytes
from archsearch.net.cost import COST_METRICS, analyze
from archsearch.net.deploy import live_elements
from archsearch.net.model import build
from archsearch.net.spec import NetSpec
from archsearch.results.onnx_export import ONNX_TOLERANCE, export_onnx
from archsearch.search.settings import ALL_METRICS, ExportSettings, LatencySettings
from tests.conftest import random_spec

ROOT = Path(__file__).resolve().parents[2]

#: A branch: a's output lives across b and c until d consumes both.
BRANCHY = {
    "name": "branchy",
    "input": [2, 4, 4],
    "num_classes": 3,
    "nodes": [
        {"name": "a", "op": "conv", "out": 4, "kernel": 3, "padding": 1},  # 64
        {"name": "b", "op": "conv", "out": 8, "kernel": 1},  # 128
        {"name": "c", "op": "conv", "out": 4, "kernel": 1, "inputs": ["b"]},  # 64
        {"name": "d", "op": "concat", "inputs": ["a", "c"]},  # 128
        {"name": "gap", "op": "global_avgpool"},  # 8
        {"name": "fc", "op": "linear", "out": 3},  # 3
    ],
}


def test_deploy_metrics_are_cost_metrics_a_sweep_can_use() -> None:
    for metric in ("model_bytes", "peak_activation_bytes"):
        assert metric in COST_METRICS and ALL_METRICS[metric] == "minimize"
        assert metric in analyze(NetSpec.from_dict(BRANCHY)).metrics()


def test_peak_activations_of_a_hand_computed_graph() -> None:
    # The input (32) is held by the caller throughout; a node's output lives until its last
    # consumer has run. a: in+a = 96; b: in+a+b = 224; c: in+a+b+c = 288; d: in+a+c+d = 288;
    # gap: in+d+gap = 168; fc: in+gap+fc = 43.
    assert live_elements(NetSpec.from_dict(BRANCHY)) == [96, 224, 288, 288, 168, 43]
    report = analyze(NetSpec.from_dict(BRANCHY), batch_size=8, bytes_per_element=2)
    assert report.peak_activation_bytes == 8 * 2 * 288


def _measured_live(spec: NetSpec) -> list[int]:
    """Elements per image held by GraphNet while each node runs, traced with forward hooks.

    Every node output (and the input) is tracked by a weak reference: at a node's hook, the
    sum over the buffers (storages) still referenced is what the forward pass holds at that step.
    """
    model = build(spec).eval()
    tracked: list[weakref.ref[torch.Tensor]] = []
    live: list[int] = []

    def hook(_module: Any, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        held = [t for r in tracked if (t := r()) is not None] + [*inputs, output]
        buffers = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() // 4 for t in held}
        live.append(sum(buffers.values()))
        tracked.append(weakref.ref(output))

    for name in model.order:
        model.ops[name].register_forward_hook(hook)
    x = torch.randn(1, *spec.input)
    tracked.append(weakref.ref(x))
    with torch.no_grad():
        model(x)
        del x
    return live


def test_peak_activations_match_a_forward_hook_trace() -> None:
    # GraphNet keeps an output no node consumes (a dead branch) until the forward returns, which
    # the definition does not count (such a node is dead once computed): nets without one only.
    checked = 0
    for seed in range(40):
        spec = random_spec(seed)
        consumed = {s for srcs in spec.input_names().values() for s in srcs}
        if all(n.name in consumed for n in spec.nodes[:-1]):
            assert live_elements(spec) == _measured_live(spec), seed
            checked += 1
    assert checked >= 5


@pytest.mark.parametrize("seed", range(4))
def test_model_bytes_predicts_the_onnx_file_size_within_5_percent(seed: int) -> None:
    from archsearch.search.space import load_space

    space = load_space("fire")
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed)).ask()
    spec = space.sample(trial, (1, 28, 28), 10)
    size = len(to_onnx_bytes(build(spec), tuple(spec.input)))
    assert abs(analyze(spec).model_bytes - size) <= 0.05 * size


def test_model_bytes_folds_batch_norm() -> None:
    plain = {**BRANCHY, "nodes": [dict(n) for n in BRANCHY["nodes"]]}
    normed = {**BRANCHY, "nodes": [dict(n, bn=True) if n["op"] == "conv" else n for n in BRANCHY["nodes"]]}
    a, b = analyze(NetSpec.from_dict(plain)), analyze(NetSpec.from_dict(normed))
    assert b.params > a.params and b.model_bytes == a.model_bytes
    size = len(to_onnx_bytes(build(NetSpec.from_dict(normed)), (2, 4, 4)))
    assert abs(b.model_bytes - size) <= 0.3 * size  # a toy: its file is mostly graph, estimated coarsely


def test_onnxruntime_latency_and_runtime_setting() -> None:
    spec = NetSpec.from_dict(BRANCHY)
    result = measure_latency(build(spec), tuple(spec.input), 4, threads=1, repeats=3, runtime="onnxruntime")
    assert result.median_ms > 0 and result.device == "cpu:onnxruntime"
    with pytest.raises(ConfigError, match=r"latency\.runtime"):
        LatencySettings(runtime="tvm")
    with pytest.raises(ConfigError, match=r"export\.onnx"):
        ExportSettings(int8=True)


def test_a_model_prepared_for_onnxruntime_is_exported_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from archsearch.hardware import ort

    spec, exports = NetSpec.from_dict(BRANCHY), []
    real = ort.to_onnx_bytes
    monkeypatch.setattr(ort, "to_onnx_bytes", lambda *a: exports.append(a) or real(*a))
    prepared = prepare_latency(build(spec), tuple(spec.input), threads=1, runtime="onnxruntime")
    results = [prepared.measure(b, warmup=1, repeats=2) for b in (1, 3, 1)]
    assert len(exports) == 1  # one export and session, timed at batch 1 and 3
    assert [r.batch_size for r in results] == [1, 3, 1]
    assert all(r.device == "cpu:onnxruntime" and r.median_ms > 0 for r in results)


def test_a_missing_deploy_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    from archsearch.hardware.ort import import_deploy

    real = importlib.import_module

    def missing(name: str, *args: Any) -> Any:
        if name.startswith("onnxruntime"):
            raise ImportError(name)
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", missing)
    with pytest.raises(ConfigError, match=r"archsearch\[deploy\]"):
        import_deploy("onnxruntime")


def test_export_onnx_matches_pytorch_and_measures_int8_accuracy(tmp_path: Path) -> None:
    from archsearch.data.datasets import load_dataset

    data = load_dataset(
        {"name": "synthetic", "shape": [2, 4, 4], "num_classes": 3, "train_size": 96, "test_size": 32}
    )
    spec = NetSpec.from_dict(BRANCHY)
    weights = tmp_path / "w.pt"
    torch.save(build(spec).state_dict(), weights)
    study = optuna.create_study()
    trial = optuna.trial.create_trial(
        value=0.5, user_attrs={"spec": spec.to_dict(), "spec_hash": spec.hash, "weights": str(weights)}
    )
    (tmp_path / "pareto.csv").write_text("trial,val_acc\n0,0.5\n")
    (tmp_path / "pareto.json").write_text(json.dumps({"front": [{"trial": 0, "val_acc": 0.5}]}))
    trial.number = 0
    missing = optuna.trial.create_trial(value=0.4, user_attrs={"spec": spec.to_dict()})
    missing.number = 1
    study.add_trial(trial)
    done = export_onnx([trial, missing], data, tmp_path, int8=True)
    row = done.rows[0]
    assert row["onnx_max_abs_diff"] <= ONNX_TOLERANCE and done.skipped == {1: "no trained weights file"}
    assert 0.0 <= row["int8_val_acc"] <= 1.0 and 0.0 <= row["int8_test_acc"] <= 1.0
    assert Path(row["onnx_file"]).stat().st_size == row["onnx_bytes"] and row["int8_bytes"] > 0
    with (tmp_path / "pareto.csv").open() as fh:
        table = list(csv.DictReader(fh))
    for column in ("onnx_bytes", "int8_bytes", "onnx_max_abs_diff", "int8_val_acc", "int8_test_acc"):
        assert table[0][column] != ""
    assert (
        json.loads((tmp_path / "pareto.json").read_text())["front"][0]["int8_test_acc"]
        == row["int8_test_acc"]
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_latency_is_timed_with_events() -> None:
    spec = NetSpec.from_dict(BRANCHY)
    result = measure_latency(build(spec), tuple(spec.input), 2, repeats=3, device="cuda")
    assert result.device.startswith("cuda") and result.median_ms > 0


@pytest.mark.slow
def test_fire_deploy_sweep_runs_end_to_end_from_the_cli(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "archsearch", "+sweep=fire_deploy", "study.n_trials=2", "trainer.epochs=1"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    with (tmp_path / "results" / "fire_deploy" / "pareto.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert rows and all(float(r["latency_ms"]) <= 2.0 for r in rows)
    for r in rows:
        assert float(r["onnx_max_abs_diff"]) <= ONNX_TOLERANCE and r["int8_val_acc"] != ""
    assert "latency_est_ms: estimate on auto (calibrated on" in done.stdout
