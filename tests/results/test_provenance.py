"""Results say where they came from (versions, commit, device, hardware profile), in MLflow and the export."""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
import subprocess
from importlib.metadata import version
from pathlib import Path

import pytest
import torch
import yaml
from mlflow import MlflowClient

from archsearch.cli.compose import compose_sweep
from archsearch.cli.main import run_sweep
from archsearch.hardware.profile import load_hardware
from archsearch.results.provenance import (
    FIELDS,
    PROVENANCE_ATTR,
    gather_provenance,
    git_state,
    profile_hash,
    row_provenance,
)
from archsearch.testing import FixedCostFit


def test_gather_names_the_versions_the_device_and_the_profile() -> None:
    profile = load_hardware("laptop_cpu")
    found = gather_provenance(profile, "cpu")
    assert found.archsearch_version == version("archsearch")
    assert found.torch_version == torch.__version__
    assert found.device == "cpu"
    assert (found.hardware, found.hardware_hash) == ("laptop_cpu", profile_hash(profile))
    assert list(found.to_dict()) == list(FIELDS)
    # Without a profile or a device (finalize prices nothing), those fields are unknown, not guessed.
    bare = gather_provenance()
    assert (bare.device, bare.hardware, bare.hardware_hash) == (None, None, None)


def test_the_profile_hash_follows_the_numbers_not_the_object() -> None:
    profile = load_hardware("laptop_cpu")
    assert profile_hash(profile) == profile_hash(load_hardware("laptop_cpu"))
    assert len(profile_hash(profile)) == 12
    faster = dataclasses.replace(profile, peak_gflops=profile.peak_gflops * 2)
    assert profile_hash(faster) != profile_hash(profile)


def test_tags_are_prefixed_and_carry_mlflows_commit_tag() -> None:
    found = dataclasses.replace(gather_provenance(None, "cpu"), git_commit="a" * 40, git_dirty=False)
    tags = found.tags()
    assert tags["archsearch.git_commit"] == "a" * 40
    assert tags["mlflow.source.git.commit"] == "a" * 40
    assert tags["archsearch.git_dirty"] == "false"
    assert "archsearch.hardware" not in tags  # unknown fields are left out, not tagged "None"


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_git_state_reads_a_checkout_and_nothing_else(tmp_path: Path) -> None:
    assert git_state(tmp_path / "plain") == (None, None)
    repo = tmp_path / "repo"
    repo.mkdir()

    def git(*args: str) -> str:
        env = ["-c", "user.name=t", "-c", "user.email=t@example.org"]
        command = ["git", *env, "-C", str(repo), *args]
        return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()

    git("init", "-q")
    (repo / "a.txt").write_text("one\n")
    git("add", "a.txt")
    git("commit", "-q", "-m", "first")
    assert git_state(repo) == (git("rev-parse", "HEAD"), False)
    (repo / "a.txt").write_text("two\n")
    git_state.cache_clear()
    assert git_state(repo) == (git("rev-parse", "HEAD"), True)


def test_a_finalized_row_keeps_the_searchs_profile_and_names_who_trained_it() -> None:
    search = {k: f"search-{k}" for k in FIELDS}
    final = {**{k: f"final-{k}" for k in FIELDS}, "hardware": None, "hardware_hash": None}
    row = row_provenance(search, final)
    assert row["device"] == "final-device" and row["git_commit"] == "final-git_commit"
    assert (row["hardware"], row["hardware_hash"]) == ("search-hardware", "search-hardware_hash")
    assert row_provenance(None, None) == dict.fromkeys(FIELDS)


def test_a_sweep_records_its_provenance_in_mlflow_the_study_and_the_export(tmp_path: Path) -> None:
    cfg = compose_sweep(tmp_path, "study.n_trials=3", "hardware=laptop_cpu")
    result = run_sweep(cfg, fit_fn=FixedCostFit(seconds=0.0, epochs=1))
    expected = gather_provenance(load_hardware("laptop_cpu"), "auto").to_dict()
    assert result.study.user_attrs[PROVENANCE_ATTR] == expected

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("archsearch/fire")
    assert experiment is not None
    parent = client.search_runs([experiment.experiment_id], "tags.`archsearch.role` = 'parent'")[0]
    trial = client.get_run(result.front[0].user_attrs["mlflow_run_id"])
    for run in (parent, trial):
        assert run.data.tags["archsearch.archsearch_version"] == expected["archsearch_version"]
        assert run.data.tags["archsearch.torch_version"] == expected["torch_version"]
        assert run.data.tags["archsearch.hardware"] == "laptop_cpu"
        assert run.data.tags["archsearch.hardware_hash"] == expected["hardware_hash"]
        assert run.data.tags["archsearch.device"] == expected["device"]

    payload = json.loads((tmp_path / "results" / "pareto.json").read_text())
    assert payload["provenance"]["search"] == expected
    assert payload["provenance"]["export"]["archsearch_version"] == expected["archsearch_version"]
    with (tmp_path / "results" / "pareto.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert rows and set(FIELDS) <= set(rows[0])
    assert {r["hardware_hash"] for r in rows} == {expected["hardware_hash"]}
    assert {r["torch_version"] for r in rows} == {expected["torch_version"]}


def test_each_trials_config_and_net_yaml_describe_that_trial(tmp_path: Path) -> None:
    cfg = compose_sweep(tmp_path, "study.n_trials=3", "hardware=laptop_cpu")
    result = run_sweep(cfg, fit_fn=FixedCostFit(seconds=0.0, epochs=1))
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    configs = set()
    for t in result.study.trials:
        run_id = t.user_attrs["mlflow_run_id"]
        root = Path(client.download_artifacts(run_id, "", str(tmp_path / "dl" / run_id)))
        config_text = (root / "config.yaml").read_text()
        assert config_text.startswith(f"# archsearch study 'fire', trial {t.number}: ")
        config = yaml.safe_load(config_text)
        # The trial's own network, not the `model: fire_digits` default of the composed config.
        assert config["model"] == yaml.safe_load((root / "net.yaml").read_text())
        assert config["model"]["name"] == t.user_attrs["spec"]["name"]
        assert config["model_file"] is None
        assert config["study"]["name"] == "fire" and config["trainer"]["epochs"] == cfg.trainer.epochs
        configs.add(config_text)
    assert len(configs) == len(result.study.trials)
    # A member's net.yaml is the exported file's text, retrain header included.
    member = result.front[0]
    exported = next((tmp_path / "results" / "nets").glob(f"trial_{member.number:04d}_*.yaml")).read_text()
    logged = (tmp_path / "dl" / member.user_attrs["mlflow_run_id"] / "net.yaml").read_text()
    assert logged == exported
    assert "# retrain: " in exported
