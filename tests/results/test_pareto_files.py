"""pareto.csv/json: net file and weights columns, integer counts, units, the hypervolume's normalisation."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import optuna
import pytest

from archsearch.cli.compose import compose_sweep
from archsearch.cli.main import run_sweep
from archsearch.net.spec import load_spec
from archsearch.results.export import export_study, hypervolume_history
from archsearch.results.front_meta import column_units
from archsearch.testing import FixedCostFit

COUNTS = ("params", "macs", "flops", "bytes", "activations", "model_bytes", "peak_activation_bytes")


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("pareto")
    cfg = compose_sweep(tmp, "study.n_trials=5", "hardware=laptop_cpu")
    run_sweep(cfg, fit_fn=FixedCostFit(seconds=0.0, epochs=1))
    return tmp / "results"


def test_net_file_and_weights_columns_name_the_members_files(swept: Path) -> None:
    with (swept / "pareto.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert rows and "config" not in rows[0]
    for row in rows:
        assert load_spec(row["net_file"]).hash == row["spec_hash"]
        # Relative to the export directory, where the sweep keeps them.
        assert not Path(row["weights"]).is_absolute()
        assert (swept / row["weights"]).is_file()


def test_counts_are_integers_in_both_files(swept: Path) -> None:
    with (swept / "pareto.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    front = json.loads((swept / "pareto.json").read_text())["front"]
    for row, member in zip(rows, front, strict=True):
        for key in COUNTS:
            assert row[key].isdigit(), (key, row[key])
            assert isinstance(member[key], int), (key, member[key])


def test_pareto_json_gives_the_units_of_its_columns(swept: Path) -> None:
    payload = json.loads((swept / "pareto.json").read_text())
    units = payload["units"]
    assert "per image" in units["macs"]
    assert "batch of 1 image" in units["bytes"] and "4 bytes per element" in units["bytes"]
    assert set(units) <= set(payload["front"][0])
    # The batch the costs were counted at is the study's, not an assumption.
    assert "batch of 8 images" in column_units(["bytes"], {"batch_size": 8, "bytes_per_element": 2})["bytes"]


def test_the_hypervolume_block_matches_hypervolume_csv_and_states_its_box(swept: Path) -> None:
    payload = json.loads((swept / "pareto.json").read_text())["hypervolume"]
    last = (swept / "hypervolume.csv").read_text().strip().splitlines()[-1]
    assert payload["value"] == pytest.approx(float(last.split(",")[1]), rel=1e-5)
    axes = {a["metric"]: a for a in payload["axes"]}
    assert (axes["val_acc"]["lower"], axes["val_acc"]["upper"]) == (0.0, 1.0)
    assert axes["val_acc"]["normalised"] == "natural 0-1"
    assert axes["params"]["scale"] == "log10" and axes["params"]["normalised"] == "min-max over the study"
    described = "val_acc on 0-1, log10 params min-max over the 5 feasible trials"
    assert payload["normalisation"].startswith(described)


def test_accuracy_is_on_its_natural_scale_not_the_range_the_study_reached(tmp_path: Path) -> None:
    """Two trials at 0.90 and 0.95: min-max would stretch 0.05 of accuracy over the whole axis."""
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_user_attr("objectives", ["val_acc", "params"])
    for acc, params in ((0.90, 100.0), (0.95, 1000.0)):
        study.add_trial(optuna.trial.create_trial(values=[acc, params]))
    # Losses (0.10, 0) and (0.05, 1) in a 1.1 x 1.1 box: 1.0 x 1.1 + 0.05 x 0.1.
    expected = (1.0 * 1.1 + 0.05 * 0.1) / 1.1**2
    assert math.isclose(hypervolume_history(study)[-1][1], expected)
    export_study(study, tmp_path, plots=True)
    assert (tmp_path / "hypervolume.png").is_file()
