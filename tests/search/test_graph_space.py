"""Graph spaces: net YAMLs with distributions, Fire-native fields, shared params, optional nodes, blocks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.trial import FixedTrial

from archsearch.errors import ConfigError
from archsearch.net.cost import analyze
from archsearch.net.nodes import AddNode, FireNode
from archsearch.net.spec import NetSpec, load_spec
from archsearch.resources import find_config
from archsearch.search.graph_space import GraphSpace
from archsearch.search.space import InfeasibleArchitecture, SearchSpace, TemplateSpace, load_space

optuna.logging.set_verbosity(optuna.logging.WARNING)

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ("squeezenet1_1_graph", "fire_stages_graph")


def squeezenet_params() -> dict[str, Any]:
    """SqueezeNet 1.1's own values in squeezenet1_1_graph.yaml (e.g. fire2: 16 / (64 + 64))."""
    params: dict[str, Any] = {"conv1.stride": 2, "conv1.padding": 0}
    params.update({f"pool{n}.present": True for n in (1, 3, 5)})
    params.update({f"by{n}.present": False for n in (3, 5, 7, 9)})
    for n in range(2, 10):
        params.update({f"fire{n}.sr": 0.125, f"fire{n}.pct3x3": 0.5})
    return params


def space(nodes: list[Any], **top: Any) -> GraphSpace:
    raw = {"input": [1, 8, 8], "num_classes": 10, "nodes": nodes, **top}
    return GraphSpace.from_dict(raw, name="t")


HEAD = [
    {"name": "conv_out", "op": "conv", "out": "num_classes", "kernel": 1, "act": "none"},
    {"name": "gap", "op": "global_avgpool"},
]


def by_name(spec: NetSpec) -> dict[str, Any]:
    return {n.name: n for n in spec.nodes}


def test_pinned_squeezenet1_1_graph_is_squeezenet1_1_exactly() -> None:
    s = load_space("squeezenet1_1_graph")
    spec = s.sample(FixedTrial(squeezenet_params()), (3, 224, 224), 1000)
    report = analyze(spec)
    assert (report.params, report.macs) == (1_235_496, 349_151_936)
    assert spec.hash == load_spec(find_config("model", "squeezenet1_1")).hash


@pytest.mark.parametrize("name", SHIPPED)
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_random_draws_of_shipped_spaces_are_valid_or_say_why(name: str, shape: tuple[int, int, int]) -> None:
    s = load_space(name)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    valid = 0
    for _ in range(200):
        try:
            spec = s.sample(study.ask(), shape, 10)
        except InfeasibleArchitecture as exc:
            assert exc.reason.endswith(".")
            continue
        assert spec.name == f"{name}-{spec.hash}" and spec.input == shape
        valid += 1
    assert valid > 150


def test_fire_native_fields_follow_the_template_rounding() -> None:
    s = space(
        [
            {"name": "f", "op": "fire", "expand": 64, "sr": 0.25, "pct3x3": 0.5, "pct5x5": 0.25},
            {"name": "g", "op": "fire", "e": 10, "sr": {"float": [0.1, 0.9]}},
            *HEAD,
        ]
    )
    spec = s.sample(FixedTrial({"g.sr": 0.35}), (1, 8, 8), 10)
    f, g = by_name(spec)["f"], by_name(spec)["g"]
    assert (f.squeeze, f.mix) == (16, {1: 16, 3: 32, 5: 16})
    # Defaults as the template's: pct3x3 0.5, pct5x5 0; 3.5 squeeze channels round half up.
    assert (g.squeeze, g.mix) == (4, {1: 5, 3: 5})


def test_shared_parameter_ties_many_nodes_and_is_drawn_once_by_name() -> None:
    s = space(
        [
            {"name": "f1", "op": "fire", "expand": 32, "sr": "$ratio"},
            {"name": "f2", "op": "fire", "expand": 64, "sr": {"ref": "ratio"}},
            *HEAD,
        ],
        params={"ratio": {"float": [0.125, 0.5]}},
    )
    assert set(s.distributions()) == {"ratio"}
    spec = s.sample(FixedTrial({"ratio": 0.25}), (1, 8, 8), 10)
    assert [n.squeeze for n in spec.nodes if isinstance(n, FireNode)] == [8, 16]


def test_optional_node_is_read_through_and_an_add_drops_the_missing_branch() -> None:
    s = space(
        [
            {"name": "f1", "op": "fire", "expand": 16},
            {"name": "pool", "op": "maxpool", "optional": True},
            {"name": "f2", "op": "fire", "expand": 16, "optional": {"categorical": [True, False]}},
            {"name": "by", "op": "add", "inputs": ["pool", "f2"]},
            *HEAD,
        ]
    )
    full = by_name(s.sample(FixedTrial({"pool.present": True, "f2.present": True}), (1, 8, 8), 10))
    assert full["by"].inputs == ("pool", "f2")
    # No pool: f2 reads f1; the add drops the missing branch and passes f2 through.
    no_pool = s.sample(FixedTrial({"pool.present": False, "f2.present": True}), (1, 8, 8), 10)
    assert [n.name for n in no_pool.nodes] == ["f1", "f2", "conv_out", "gap"]
    assert by_name(no_pool)["f2"].inputs is None
    # No f2: the add keeps one input and passes it through; the head reads the pool.
    spec = s.sample(FixedTrial({"pool.present": True, "f2.present": False}), (1, 8, 8), 10)
    assert [n.name for n in spec.nodes] == ["f1", "pool", "conv_out", "gap"]
    assert not any(isinstance(n, AddNode) for n in spec.nodes)


def test_an_add_of_three_keeps_the_branches_present() -> None:
    s = space(
        [
            {"name": "f1", "op": "fire", "expand": 16},
            {"name": "f2", "op": "fire", "expand": 16},
            {"name": "f3", "op": "fire", "expand": 16, "optional": True},
            {"name": "sum", "op": "add", "inputs": ["f1", "f2", "f3"]},
            *HEAD,
        ]
    )
    assert by_name(s.sample(FixedTrial({"f3.present": False}), (1, 8, 8), 10))["sum"].inputs == ("f1", "f2")


def test_absent_nodes_draw_no_parameters() -> None:
    s = space(
        [{"name": "f", "op": "fire", "expand": 16, "sr": {"float": [0.1, 0.5]}, "optional": True}, *HEAD]
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    drawn = set()
    for _ in range(20):
        trial = study.ask()
        s.sample(trial, (1, 8, 8), 10)
        drawn.add(
            frozenset(trial.params) if trial.params["f.present"] else frozenset(trial.params) | {"absent"}
        )
    assert drawn == {frozenset({"f.present", "f.sr"}), frozenset({"f.present", "absent"})}


def test_repeated_block_has_unique_names_and_per_repeat_widths() -> None:
    s = space(
        [
            {"name": "conv1", "op": "conv", "out": 16, "kernel": 3},
            {
                "name": "stage",
                "repeat": {"int": [0, 4]},
                "block": [
                    {"name": "fire{i}", "op": "fire", "expand": {"base": 16, "incr": 16, "every": 2}},
                    {"name": "by", "op": "add", "inputs": ["{in}", "fire{i}"], "project": True},
                ],
            },
            *HEAD,
        ]
    )
    spec = s.sample(FixedTrial({"stage.repeat": 4}), (1, 8, 8), 10)
    nodes = by_name(spec)
    assert [sum(nodes[f"fire{i}"].mix.values()) for i in range(4)] == [16, 16, 32, 32]
    assert [nodes[f"by_r{i}"].inputs for i in range(2)] == [("conv1", "fire0"), ("by_r0", "fire1")]
    # Zero repeats: the head reads the block's input.
    assert [n.name for n in s.sample(FixedTrial({"stage.repeat": 0}), (1, 8, 8), 10).nodes] == [
        "conv1",
        "conv_out",
        "gap",
    ]
    assert "stage.repeat" in s.distributions()


def test_per_repeat_distributions_are_named_by_instance() -> None:
    s = space(
        [
            {
                "name": "b",
                "repeat": 2,
                "block": [{"name": "f{i}", "op": "fire", "expand": 16, "sr": {"categorical": [0.25, 0.5]}}],
            },
            *HEAD,
        ]
    )
    assert sorted(s.grid()) == ["f0.sr", "f1.sr"]
    spec = s.sample(FixedTrial({"f0.sr": 0.25, "f1.sr": 0.5}), (1, 8, 8), 10)
    assert [by_name(spec)[f"f{i}"].squeeze for i in range(2)] == [4, 8]


@pytest.mark.parametrize(
    ("node", "message"),
    [
        ({"sr": {"float": [0.9, 0.5]}}, "node 'f' field 'sr' has low 0.9 > high 0.5"),
        ({"sr": {"float": [0.5, 2.0]}}, "node 'f' field 'sr' has bound 2.0"),
        ({"bn": {"int": [0, 1]}}, "node 'f' field 'bn'"),
        ({"sr": {"uniform": [0, 1]}}, "node 'f' field 'sr' has unknown distribution type 'uniform'"),
        ({"sr": "$nope"}, "node 'f' field 'sr' refers to parameter 'nope'"),
        ({"squeeze": 4}, "node 'f' mixes Fire forms"),
        ({"colour": 1}, "node 'f' has unknown field 'colour'"),
    ],
)
def test_a_bad_distribution_names_file_node_and_field(
    tmp_path: Path, node: dict[str, Any], message: str
) -> None:
    path = tmp_path / "bad.yaml"
    raw = {
        "input": [1, 8, 8],
        "num_classes": 10,
        "nodes": [{"name": "f", "op": "fire", "expand": 16, **node}, *HEAD],
    }
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=f"^{path}") as info:
        load_space(path)
    assert message in str(info.value)


def test_a_file_that_makes_no_valid_network_is_a_load_error(tmp_path: Path) -> None:
    path = tmp_path / "never.yaml"
    pools = [{"name": f"p{i}", "op": "maxpool", "kernel": {"categorical": [2, 4]}} for i in range(4)]
    path.write_text(yaml.safe_dump({"input": [1, 8, 8], "num_classes": 10, "nodes": [*pools, *HEAD]}))
    with pytest.raises(ConfigError, match=r"gave no valid network in 48 random draws .* shrinks"):
        load_space(path)


# The FixedTrial's out-of-range kernel is the point of the test; Optuna warns about it.
@pytest.mark.filterwarnings("ignore:The value -1 of the parameter:UserWarning")
def test_a_draw_that_makes_no_network_is_infeasible_with_the_validator_sentence() -> None:
    s = space([{"name": "p", "op": "maxpool", "kernel": {"int": [1, 16]}}, *HEAD])
    with pytest.raises(InfeasibleArchitecture, match="node 'p' shrinks"):
        s.sample(FixedTrial({"p.kernel": 16}), (1, 8, 8), 10)
    with pytest.raises(InfeasibleArchitecture, match="outside its domain"):
        s.sample(FixedTrial({"p.kernel": -1}), (1, 8, 8), 10)


def test_grid_over_a_categorical_graph_space_visits_every_network() -> None:
    s = space(
        [
            {
                "name": "f",
                "op": "fire",
                "expand": {"categorical": [16, 32]},
                "sr": {"float": [0.25, 0.5], "step": 0.25},
            },
            *HEAD,
        ]
    )
    grid = s.grid()
    assert grid == {"f.e": [16, 32], "f.sr": [0.25, 0.5]}
    study = optuna.create_study(sampler=optuna.samplers.GridSampler(grid, seed=0))
    hashes = set()
    for _ in range(4):
        hashes.add(s.sample(study.ask(), (1, 8, 8), 10).hash)
    assert len(hashes) == 4
    with pytest.raises(ConfigError, match=r"fire\d\.sr' is a continuous float"):
        load_space("squeezenet1_1_graph").grid()


def test_both_kinds_share_one_interface() -> None:
    for name in ("fire", *SHIPPED):
        s = load_space(name)
        assert isinstance(s, SearchSpace) and s.name == name and s.path is not None
        assert len(s.hash) == 12 and s.distributions()
        assert load_space(name).hash == s.hash
    assert isinstance(load_space("fire"), TemplateSpace)
    graph = load_space("fire_stages_graph")
    again = GraphSpace.from_dict(yaml.safe_load(yaml.safe_dump(graph.to_dict())), name="other")
    assert again.hash == graph.hash and again.distributions() == graph.distributions()


def test_fire_stages_runs_from_the_python_api(tmp_path: Path) -> None:
    import archsearch as A
    from archsearch.testing import FixedCostFit

    settings = A.SearchSettings(
        study=A.StudySettings(name="stages", n_trials=3),
        trainer=A.TrainerSettings(epochs=1, threads=1),
        tracking=A.TrackingSettings(enabled=False),
        export=A.ExportSettings(dir=str(tmp_path / "out"), plots=False),
    )
    result = A.run_search(
        A.load_space("fire_stages_graph"),
        A.load_dataset({"name": "digits"}),
        settings,
        storage=f"sqlite:///{tmp_path / 'o.db'}",
        hardware=A.load_hardware("laptop_cpu"),
        fit_fn=FixedCostFit(seconds=0.0),
    )
    assert result.study.user_attrs["space"] == "fire_stages_graph"
    assert result.study.user_attrs["space_hash"] == load_space("fire_stages_graph").hash
    assert result.members
    # The exported nets are plain net YAMLs, hashed as their trials' networks.
    nets = sorted((tmp_path / "out" / "nets").glob("*.yaml"))
    assert {load_spec(p).hash for p in nets} == {m["spec_hash"] for m in result.members}


@pytest.mark.slow
@pytest.mark.parametrize("sweep", ["squeezenet1_1_graph", "fire_stages"])
def test_graph_sweeps_run_end_to_end_from_the_cli(tmp_path: Path, sweep: str) -> None:
    args = [f"+sweep={sweep}", "data=digits", "study.n_trials=2", "trainer.epochs=1", "export.plots=false"]
    out = subprocess.run(
        [sys.executable, "-m", "archsearch", *args],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    study = optuna.load_study(study_name=sweep, storage=f"sqlite:///{tmp_path / 'mlruns' / 'optuna.db'}")
    assert study.user_attrs["space_hash"] == load_space(study.user_attrs["space"]).hash
    assert any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    nets = list((tmp_path / "results" / sweep / "nets").glob("*.yaml"))
    assert nets and all(load_spec(p).nodes for p in nets)
