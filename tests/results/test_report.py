"""The cost report: table functions, atomic table files, the Hydra config and the command line."""

from __future__ import annotations

import csv
import dataclasses
import io
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from rich.console import Console

from archsearch.errors import ConfigError
from archsearch.hardware.profile import load_hardware
from archsearch.net.cost import analyze
from archsearch.net.spec import NetSpec
from archsearch.resources import CONF_DIR
from archsearch.results.report import compare_table, layer_table, load_model, report, write_table

LAPTOP = load_hardware("laptop_cpu")


def composed(*overrides: str) -> dict[str, Any]:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("report", overrides=list(overrides))
    plain = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(plain, dict)
    return {str(k): v for k, v in plain.items()}


def render(cfg: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    buffer = io.StringIO()
    rows = report(cfg, Console(file=buffer, width=200))
    return rows, buffer.getvalue()


def test_layer_table_has_a_row_per_node_and_a_total_row(reference_specs: dict[str, NetSpec]) -> None:
    spec = reference_specs["squeezenet1_0"]
    rows = layer_table(spec, LAPTOP, batch_size=2)
    costs = analyze(spec, LAPTOP, batch_size=2)
    assert [r["node"] for r in rows] == [n.name for n in spec.nodes] + ["total"]
    assert rows[0] == {
        "node": "conv1",
        "op": "conv",
        "output_shape": "96x109x109",
        "params": 14_208,
        "macs": 167_664_672,
        "bytes": costs.nodes[0].bytes,
        "intensity": pytest.approx(2 * 167_664_672 * 2 / costs.nodes[0].bytes),
        "bound": costs.nodes[0].bound,
        "latency_ms": pytest.approx(1e3 * costs.nodes[0].latency_s),
    }
    total = rows[-1]
    assert (total["params"], total["macs"], total["bytes"]) == (1_248_424, 818_924_576, costs.bytes)
    assert total["latency_ms"] == pytest.approx(sum(r["latency_ms"] for r in rows[:-1]))
    assert {r["bound"] for r in rows} <= {"compute", "memory", "-"}


def test_compare_table_shows_squeezenet_49x_fewer_params_but_more_macs() -> None:
    specs = [load_model(n) for n in ("alexnet", "squeezenet1_0", "squeezenet1_1")]
    rows = compare_table(specs, LAPTOP, batch_sizes=[1, 64])
    alex, sq10, sq11 = rows
    assert [r["model"] for r in rows] == ["alexnet", "squeezenet1_0", "squeezenet1_1"]
    assert (sq10["params"], sq10["macs"], sq11["params"]) == (1_248_424, 818_924_576, 1_235_496)
    assert 1 / sq10["params_ratio"] == pytest.approx(48.94, abs=0.01)
    assert sq10["macs_ratio"] == pytest.approx(818_924_576 / 714_188_480)
    assert sq10["bytes_b1_ratio"] < 1 < sq10["bytes_b64_ratio"]
    assert sq10["bytes_b64"] == analyze(specs[1], batch_size=64).bytes
    assert all(alex[k] == 1.0 for k in alex if k.endswith("_ratio"))


def test_write_table_writes_csv_and_markdown(tmp_path: Path, reference_specs: dict[str, NetSpec]) -> None:
    rows = layer_table(reference_specs["fire_digits"], LAPTOP)
    with (write_table(rows, tmp_path / "t.csv")).open() as fh:
        back = list(csv.DictReader(fh))
    assert [r["node"] for r in back] == [r["node"] for r in rows]
    assert back[-1]["params"] == "10218" and back[0]["output_shape"] == "32x8x8"
    md = write_table(rows, tmp_path / "t.md").read_text().splitlines()
    assert md[0].startswith("| node | op | output_shape | params | macs |")
    assert md[-1].startswith("| total |  | 10 | 10,218 | 315,392 |")
    assert len(md) == 2 + len(rows)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv", "t.md"]


def test_write_table_failure_keeps_the_old_file_and_leaves_no_temp_file(tmp_path: Path) -> None:
    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("cannot format")

    target = tmp_path / "t.csv"
    target.write_text("old\n")
    with pytest.raises(RuntimeError):
        write_table([{"a": 1}, {"a": Unprintable()}], target)
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["t.csv"]


def test_write_table_rejects_other_suffixes_and_missing_directories(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"out must end in \.csv or \.md, got '.*t\.txt'\."):
        write_table([{"a": 1}], tmp_path / "t.txt")
    with pytest.raises(ConfigError, match="does not exist"):
        write_table([{"a": 1}], tmp_path / "missing" / "t.csv")
    assert list(tmp_path.iterdir()) == []


def test_report_config_defaults_compose_to_squeezenet_on_the_laptop_profile() -> None:
    cfg = composed()
    assert cfg["model"]["name"] == "squeezenet1_0" and cfg["hardware"]["name"] == "laptop_cpu"
    assert (cfg["compare"], cfg["batch_size"], cfg["batch_sizes"], cfg["bytes_per_element"], cfg["out"]) == (
        None,
        1,
        [1, 64],
        4,
        None,
    )
    rows, text = render(cfg)
    assert rows[-1]["params"] == 1_248_424
    assert "1,248,424" in text and "0.819 G" in text and "67.74 MB" in text


def test_report_per_layer_honours_batch_size_hardware_and_element_width() -> None:
    rows, text = render(
        composed("model=squeezenet1_1", "hardware=a100", "batch_size=8", "bytes_per_element=2")
    )
    spec = load_model("squeezenet1_1")
    expected = analyze(spec, load_hardware("a100"), batch_size=8, bytes_per_element=2)
    assert rows[-1]["bytes"] == expected.bytes
    assert rows[-1]["latency_ms"] == pytest.approx(expected.latency_est_ms)
    assert "at batch 8, 2 bytes per element" in text and "on a100" in text


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["compare=[alexnet,nope]"],
            r"model 'nope' not found in .*; available: alexnet, .*squeezenet1_1\.",
        ),
        (["out=table.txt"], r"out must be null or a path ending in \.csv or \.md, got 'table\.txt'\."),
        (["batch_size=0"], r"batch_size must be a positive integer, got 0\."),
        (
            ["compare=[alexnet]", "batch_sizes=[1,0]"],
            r"batch_sizes must be .* positive integers, got \[1, 0\]\.",
        ),
    ],
)
def test_report_config_errors_are_one_sentence(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        render(composed(*overrides))


def run_cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "archsearch.report", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_prints_the_per_layer_table_and_writes_csv_without_hydra_outputs(tmp_path: Path) -> None:
    done = run_cli(tmp_path, "model=squeezenet1_0", "out=report.csv")
    assert done.returncode == 0, done.stderr
    assert "1,248,424" in done.stdout and "fire9" in done.stdout and "0.819 G" in done.stdout
    assert done.stderr == ""
    assert [p.name for p in tmp_path.iterdir()] == ["report.csv"]  # no outputs/, .hydra/ or logs
    with (tmp_path / "report.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 16 and rows[-1]["node"] == "total"
    assert (rows[-1]["params"], rows[-1]["macs"]) == ("1248424", "818924576")


def test_cli_compare_prints_models_side_by_side_and_writes_markdown(tmp_path: Path) -> None:
    done = run_cli(tmp_path, "compare=[alexnet,squeezenet1_0,squeezenet1_1]", "out=cmp.md")
    assert done.returncode == 0, done.stderr
    assert "61,100,840" in done.stdout and "1,248,424 (/48.9)" in done.stdout
    assert "0.819 (x1.15)" in done.stdout and "MB at batch 64" in done.stdout
    md = (tmp_path / "cmp.md").read_text().splitlines()
    assert [line.split(" | ")[0] for line in md[2:]] == ["| alexnet", "| squeezenet1_0", "| squeezenet1_1"]


@pytest.mark.parametrize(
    ("args", "sentence"),
    [
        (
            ("compare=[alexnet,resnet50]", "out=x.csv"),
            "error: model 'resnet50' not found in ",
        ),
        (
            ("model=resnet50",),
            "error: model 'resnet50' is not declared under conf/model/ or model/ of your config "
            "directories; available: ",
        ),
    ],
)
def test_cli_unknown_model_exits_2_with_one_sentence_and_writes_nothing(
    tmp_path: Path, args: tuple[str, ...], sentence: str
) -> None:
    done = run_cli(tmp_path, *args)
    assert done.returncode == 2
    assert done.stderr.startswith(sentence) and done.stderr.count("\n") == 1
    assert "alexnet, fire_digits" in done.stderr and "Traceback" not in done.stderr
    assert done.stdout == ""
    assert list(tmp_path.iterdir()) == []


def test_cost_report_from_python_takes_names_profiles_and_the_report_defaults() -> None:
    """``A.cost_report({"compare": [...]})`` works without every key of conf/report.yaml, and
    ``hardware`` is a profile's name or a HardwareProfile, not only the raw mapping."""
    from rich.console import Console

    import archsearch as A
    from archsearch.hardware.profile import load_hardware

    quiet = Console(quiet=True)
    rows = A.cost_report({"compare": ["alexnet", "squeezenet1_0"]}, console=quiet)
    assert [r["model"] for r in rows][:2] == ["alexnet", "squeezenet1_0"]
    by_name = A.cost_report({"model": "squeezenet1_1", "hardware": "a100"}, console=quiet)
    by_profile = A.cost_report({"model": "squeezenet1_1", "hardware": load_hardware("a100")}, console=quiet)
    assert by_name == by_profile and len(by_name) > 5


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            {"colour": "red"},
            "report has no key 'colour'; known keys: batch_size, batch_sizes, bytes_per_element",
        ),
        ({"batch_size": 0}, "batch_size must be a positive integer, got 0."),
        ({"batch_sizes": 64}, "batch_sizes must be a list of positive integers, got 64."),
        ({"batch_sizes": [1, "x"]}, "batch_sizes must be a list of positive integers, got [1, 'x']."),
        ({"out": "table.txt"}, "out must be null or a path ending in .csv or .md, got 'table.txt'."),
    ],
)
def test_report_settings_are_read_once_and_refuse_bad_keys(raw: dict[str, Any], message: str) -> None:
    from archsearch.results.report import ReportSettings

    with pytest.raises(ConfigError) as caught:
        ReportSettings.from_mapping(raw)
    assert str(caught.value).startswith(message)


def test_the_composed_report_config_is_the_report_settings_defaults() -> None:
    """conf/report.yaml and ReportSettings agree, so the CLI and the Python API report the same."""
    from archsearch.hardware.profile import load_hardware
    from archsearch.results.report import ReportSettings

    settings = ReportSettings.from_mapping(composed())
    assert isinstance(settings.model, dict) and settings.model["name"] == ReportSettings().model
    assert dataclasses.replace(settings, model="squeezenet1_0") == ReportSettings(
        hardware=load_hardware("laptop_cpu")
    )
    assert ReportSettings.from_mapping({"compare": "alexnet"}).compare == ("alexnet",)
