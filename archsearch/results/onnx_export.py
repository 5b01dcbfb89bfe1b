"""The front as deployable ONNX models (``export.onnx=true``), optionally int8 (``export.int8=true``).

Every front member with trained weights (the trial's ``weights`` user attr, or the finalized
weights for a finalized front) is built, loaded and exported to ``onnx/<trial>_<hash>.onnx``
(fp32, batch axis dynamic; :func:`archsearch.hardware.ort.to_onnx_bytes`). Each file is then
run by ONNX Runtime on real validation images beside PyTorch, and the largest absolute
difference of the logits is recorded: it must stay within :data:`ONNX_TOLERANCE`. With int8,
ONNX Runtime's static quantization (QDQ, per-channel weights) is calibrated on training
batches, and the int8 model's validation and test accuracy are measured on the whole splits.
The figures are added to pareto.csv and pareto.json as columns ``onnx_file``, ``onnx_bytes``,
``onnx_max_abs_diff`` and ``int8_file``, ``int8_bytes``, ``int8_val_acc``, ``int8_test_acc``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from optuna.trial import FrozenTrial

from archsearch.results.export import atomic_write
from archsearch.results.relocate import weights_file

if TYPE_CHECKING:
    from archsearch.data.base import DatasetLike
    from archsearch.data.images import Images

__all__ = ["CALIBRATION_BATCHES", "ONNX_TOLERANCE", "OnnxExport", "add_onnx", "export_onnx"]

#: Largest absolute logit difference allowed between ONNX Runtime and PyTorch (fp32; batch
#: norm folded and kernels reordered change only the last bits: 1e-6 measured on digits).
ONNX_TOLERANCE = 1e-4
#: Training batches (of 32 images) int8 calibration reads activation ranges from.
CALIBRATION_BATCHES = 16


@dataclass
class OnnxExport:
    """What :func:`export_onnx` wrote: files by key, figures by trial, reasons for skipped ones."""

    files: dict[str, Path] = field(default_factory=dict)
    rows: dict[int, dict[str, Any]] = field(default_factory=dict)
    skipped: dict[int, str] = field(default_factory=dict)


def export_onnx(
    front: Sequence[FrozenTrial], data: DatasetLike, directory: str | Path, int8: bool = False
) -> OnnxExport:
    """Export every front member with weights to ONNX (and int8), check it, add columns to pareto.*.

    Args:
        front: the exported front (:func:`archsearch.results.export.export_study`'s ``front``).
        data: the dataset the members were trained on (its validation images check the export;
            its training images calibrate int8; its validation and test splits score int8).
        directory: the export directory (holds pareto.csv/json; ``onnx/`` is created).
        int8: also write a statically quantized int8 model and measure its accuracy.

    Raises:
        ConfigError: onnx or onnxruntime is missing (one sentence naming the ``deploy`` extra).
    """
    from archsearch.hardware.ort import import_deploy

    import_deploy("onnx")
    import_deploy("onnxruntime")
    out = Path(directory) / "onnx"
    result = OnnxExport()
    for t in front:
        weights = weights_file(t.user_attrs.get("weights"), directory)
        if weights is None or not weights.is_file() or not isinstance(t.user_attrs.get("spec"), dict):
            result.skipped[t.number] = "no trained weights file"
            continue
        out.mkdir(parents=True, exist_ok=True)
        stem = f"trial_{t.number:04d}_{t.user_attrs.get('spec_hash', '')}"
        result.rows[t.number] = _export_member(t.user_attrs["spec"], weights, data, out / stem, int8)
        for kind in ("onnx", "int8"):
            if f"{kind}_file" in result.rows[t.number]:
                result.files[f"{kind} trial {t.number}"] = Path(result.rows[t.number][f"{kind}_file"])
    _add_columns(Path(directory), result.rows)
    return result


def add_onnx(exported: Any, data: DatasetLike, int8: bool = False) -> OnnxExport:
    """:func:`export_onnx` for an :class:`~archsearch.results.export.ExportResult`, adding its files."""
    done = export_onnx(exported.front, data, exported.directory, int8)
    exported.files.update(done.files)
    return done


def _export_member(
    spec: dict[str, Any], weights: Path, data: DatasetLike, stem: Path, int8: bool
) -> dict[str, Any]:
    """Export one member; its pareto columns."""
    from archsearch.hardware.ort import onnx_session, to_onnx_bytes
    from archsearch.net.model import build
    from archsearch.net.spec import NetSpec

    net = NetSpec.from_dict(spec)
    model = build(net)
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    model.eval()
    fp32 = stem.with_suffix(".onnx")
    atomic_write(fp32, to_onnx_bytes(model, tuple(net.input)))
    x = data.val_x[:256].float()
    with torch.inference_mode():
        expected = model(x).numpy()
    got = onnx_session(str(fp32), threads=None).run(None, {"x": x.numpy()})[0]
    diff = float(np.max(np.abs(got - expected)))
    if diff > ONNX_TOLERANCE:
        warnings.warn(f"{fp32.name}: ONNX Runtime differs from PyTorch by {diff:.2e}", stacklevel=2)
    row: dict[str, Any] = {"onnx_file": str(fp32.resolve()), "onnx_bytes": fp32.stat().st_size}
    row["onnx_max_abs_diff"] = diff
    if int8:
        q = stem.with_name(stem.name + "_int8.onnx")
        _quantize(fp32, q, data)
        session = onnx_session(str(q), threads=None)
        row.update(int8_file=str(q.resolve()), int8_bytes=q.stat().st_size)
        row["int8_val_acc"] = _accuracy(session, data.val_x, data.val_y)
        row["int8_test_acc"] = _accuracy(session, data.test_x, data.test_y)
    return row


class _Batches:
    """ONNX Runtime's CalibrationDataReader over the first training batches."""

    def __init__(self, images: Images) -> None:
        self._it: Iterator[dict[str, np.ndarray]] = (
            {"x": images[i : i + 32].float().numpy()}
            for i in range(0, min(len(images), 32 * CALIBRATION_BATCHES), 32)
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


def _quantize(fp32: Path, out: Path, data: DatasetLike) -> None:
    """Static int8 quantization (QDQ, per-channel weights) calibrated on training batches."""
    from archsearch.hardware.ort import import_deploy

    quant = import_deploy("onnxruntime.quantization")
    tmp = out.with_name(f".{out.name}.tmp")
    # It logs a suggestion to run shape-inference preprocessing on the root logger; these
    # exports carry their shapes already.
    logging.disable(logging.WARNING)
    try:
        quant.quantize_static(
            str(fp32),
            str(tmp),
            _Batches(data.train_x),
            quant_format=quant.QuantFormat.QDQ,
            per_channel=True,
            activation_type=quant.QuantType.QInt8,
            weight_type=quant.QuantType.QInt8,
        )
    finally:
        logging.disable(logging.NOTSET)
    os.replace(tmp, out)


def _accuracy(session: Any, x: Images, y: torch.Tensor) -> float:
    if len(y) == 0:
        return float("nan")
    correct = 0
    for i in range(0, len(y), 512):
        logits = session.run(None, {"x": x[i : i + 512].float().numpy()})[0]
        correct += int((logits.argmax(1) == y[i : i + 512].numpy()).sum())
    return correct / len(y)


def _add_columns(directory: Path, rows: dict[int, dict[str, Any]]) -> None:
    """Add each member's ONNX figures to pareto.csv and pareto.json (rows matched by trial)."""
    csv_path, json_path = directory / "pareto.csv", directory / "pareto.json"
    if not rows or not csv_path.is_file():
        return
    with csv_path.open(newline="") as fh:
        table = list(csv.DictReader(fh))
    columns = list(table[0]) if table else []
    for row in table:
        row.update(rows.get(int(row["trial"]), {}))
        columns += [k for k in row if k not in columns]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns)
    writer.writeheader()
    writer.writerows(table)
    atomic_write(csv_path, text.getvalue())
    if json_path.is_file():
        payload = json.loads(json_path.read_text())
        for member in payload.get("front", []):
            member.update(rows.get(int(member["trial"]), {}))
        atomic_write(json_path, json.dumps(payload, indent=2, default=str))
