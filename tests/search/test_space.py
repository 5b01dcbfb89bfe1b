"""Search spaces: file syntax and validation, the paper's Fire formulas, pools, bypass, sampling."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FixedTrial

from archsearch.errors import ArchsearchError, ConfigError
from archsearch.net.nodes import AddNode, DropoutNode, FireNode, MaxPoolNode
from archsearch.net.spec import NetSpec
from archsearch.resources import SEARCH_SPACES_DIR
from archsearch.search.space import (
    InfeasibleArchitecture,
    TemplateSpace,
    expand_widths,
    fire_channels,
    load_space,
    max_pools,
    pool_slots,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)

# One draw of every free parameter of fire.yaml; tests override what they pin.
FIRE_PARAMS: dict[str, Any] = {
    "stem_width": 32,
    "stem_kernel": 3,
    "depth": 4,
    "base_e": 32,
    "incr_e": 32,
    "freq": 2,
    "sr": 0.25,
    "pct3x3": 0.5,
    "pct5x5": 0.0,
    "pools": 2,
    "pool_layout": "even",
    "bypass": "none",
    "dropout": 0.3,
}


def fire_net(input_shape: tuple[int, int, int] = (1, 28, 28), **override: Any) -> NetSpec:
    return load_space("fire").sample(FixedTrial({**FIRE_PARAMS, **override}), input_shape, 10)


def fires(spec: NetSpec) -> list[FireNode]:
    return [n for n in spec.nodes if isinstance(n, FireNode)]


def node(spec: NetSpec, name: str) -> Any:
    return next(n for n in spec.nodes if n.name == name)


def test_expand_widths_follow_the_paper_formula_for_squeezenet() -> None:
    # SqueezeNet 1.0: base_e 128, incr_e 128, freq 2 over 8 modules (paper section 5, Table 1).
    assert expand_widths(8, 128, 128, 2) == [128, 128, 256, 256, 384, 384, 512, 512]
    assert fire_channels(128, 0.125, 0.5, 0.0) == (16, {1: 64, 3: 64})
    assert fire_channels(512, 0.125, 0.5, 0.0) == (64, {1: 256, 3: 256})


def test_sampled_fire_modules_have_e_i_and_s_i_of_the_formula() -> None:
    spec = fire_net(depth=6, base_e=32, incr_e=16, freq=2, sr=0.25, pct3x3=0.5)
    assert [f.name for f in fires(spec)] == ["fire2", "fire3", "fire4", "fire5", "fire6", "fire7"]
    assert [sum(f.mix.values()) for f in fires(spec)] == [32, 32, 48, 48, 64, 64]
    assert [f.squeeze for f in fires(spec)] == [8, 8, 12, 12, 16, 16]
    assert [f.mix for f in fires(spec)][2] == {1: 24, 3: 24}
    assert all(f.bn and f.act == "relu" for f in fires(spec))


def test_freq_sets_how_often_the_width_grows() -> None:
    spec = fire_net(depth=5, base_e=16, incr_e=16, freq=3, sr=0.5)
    assert [sum(f.mix.values()) for f in fires(spec)] == [16, 16, 16, 32, 32]
    assert [f.squeeze for f in fires(spec)] == [8, 8, 8, 16, 16]


def test_kernel_mix_splits_expand_into_1x1_3x3_and_5x5_shares() -> None:
    assert fire_channels(32, 0.125, 0.75, 0.25) == (4, {3: 24, 5: 8})
    assert fire_channels(48, 0.125, 0.25, 0.25) == (6, {1: 24, 3: 12, 5: 12})
    assert fire_channels(32, 0.125, 0.0, 0.0) == (4, {1: 32})
    # Halves round up, and the 1x1 share takes what is left.
    assert fire_channels(20, 0.125, 0.125, 0.0) == (3, {1: 17, 3: 3})


def test_squeeze_stays_between_one_and_expand_minus_one() -> None:
    assert fire_channels(32, 1.0, 0.5, 0.0)[0] == 31
    assert fire_channels(16, 0.01, 0.5, 0.0)[0] == 1


def test_kernel_shares_over_one_are_infeasible() -> None:
    with pytest.raises(InfeasibleArchitecture, match=r"pct3x3 \(0.875\) \+ pct5x5 \(0.25\) exceeds 1"):
        fire_channels(32, 0.125, 0.875, 0.25)


def test_even_pools_sit_where_squeezenet_1_0_puts_them_and_early_where_1_1_does() -> None:
    assert pool_slots(3, 8, "even") == [0, 3, 7]
    assert pool_slots(3, 8, "early") == [0, 2, 4]
    assert pool_slots(3, 3, "early") == [0, 1, 2]
    assert pool_slots(2, 5, "even") == [0, 4]
    assert pool_slots(1, 5, "even") == [0]
    assert pool_slots(0, 5, "even") == []
    squeezenet = TemplateSpace.from_dict({"depth": 8, "pools": 3}).sample(FixedTrial({}), (3, 224, 224), 10)
    names = [n.name for n in squeezenet.nodes if isinstance(n, MaxPoolNode)]
    assert names == ["pool1", "pool4", "pool8"]


def test_pool_count_is_capped_by_the_input_size() -> None:
    assert (max_pools(8, 8, 2), max_pools(28, 28, 2), max_pools(32, 32, 2), max_pools(1, 1, 2)) == (
        2,
        3,
        4,
        0,
    )
    for shape, pools, last_map in (((1, 8, 8), 2, 2), ((1, 28, 28), 3, 3), ((3, 32, 32), 3, 4)):
        spec = fire_net(shape, depth=6, pools=3)
        shapes = spec.validate()
        assert sum(isinstance(n, MaxPoolNode) for n in spec.nodes) == pools
        assert shapes["fire7"][1:] == (last_map, last_map)


def test_pools_never_outnumber_the_gaps_between_modules() -> None:
    spec = fire_net((3, 32, 32), depth=2, pools=3)
    assert [n.name for n in spec.nodes if isinstance(n, MaxPoolNode)] == ["pool1", "pool2"]


def test_network_ends_with_dropout_classifier_conv_and_global_pool() -> None:
    spec = fire_net(depth=3, dropout=0.3)
    assert [n.name for n in spec.nodes[-3:]] == ["drop4", "conv5", "gap"]
    assert node(spec, "drop4").p == 0.3
    head = node(spec, "conv5")
    assert (head.out, head.kernel, head.act) == ("num_classes", 1, "none")
    assert spec.validate()["gap"] == (10,)
    assert not any(isinstance(n, DropoutNode) for n in fire_net(dropout=0.0).nodes)


def test_simple_bypass_only_where_input_and_output_channels_match() -> None:
    # e_i = 32, 32, 64, 64 after a 32-wide stem; pools after conv1 and fire4.
    spec = fire_net(bypass="simple")
    adds = {n.name: n for n in spec.nodes if isinstance(n, AddNode)}
    assert sorted(adds) == ["by2", "by3", "by5"]
    assert adds["by2"].inputs == ("pool1", "fire2")
    assert adds["by3"].inputs == ("by2", "fire3")
    assert adds["by5"].inputs == ("pool4", "fire5")
    assert not any(a.project for a in adds.values())
    assert node(spec, "fire4").inputs is None and spec.input_names()["fire4"] == ("by3",)


def test_complex_bypass_projects_where_channels_differ() -> None:
    spec = fire_net(bypass="complex", stem_width=16)
    adds = {n.name: n for n in spec.nodes if isinstance(n, AddNode)}
    assert sorted(adds) == ["by2", "by3", "by4", "by5"]
    assert {name: a.project for name, a in adds.items()} == {
        "by2": True,
        "by3": False,
        "by4": True,
        "by5": False,
    }
    assert adds["by4"].inputs == ("by3", "fire4")
    assert spec.input_names()["pool4"] == ("by4",)


def test_no_bypass_adds_nothing() -> None:
    assert not any(isinstance(n, AddNode) for n in fire_net(bypass="none").nodes)


def test_stem_takes_width_kernel_and_batch_norm_from_the_space() -> None:
    stem = fire_net(stem_width=48, stem_kernel=5).nodes[0]
    assert (stem.name, stem.out, stem.kernel, stem.stride, stem.bn) == ("conv1", 48, 5, 1, True)


def test_sampled_net_is_named_after_space_and_hash_and_validates() -> None:
    spec = fire_net()
    assert spec.name == f"fire-{spec.hash}"
    assert spec.input == (1, 28, 28) and spec.num_classes == 10
    assert NetSpec.from_dict(spec.to_dict()) == spec


def test_fixed_trial_pins_the_same_network_every_time() -> None:
    assert fire_net().hash == fire_net().hash
    assert fire_net().hash != fire_net(sr=0.5).hash


def test_per_module_parameter_names_depend_on_depth() -> None:
    space = load_space("fire_per_module")
    base = {k: v for k, v in FIRE_PARAMS.items() if k not in ("sr", "pct3x3", "pct5x5")}
    per = {"sr": [0.125, 0.25, 0.5, 0.75], "pct3x3": [0.0, 0.25, 0.5, 0.75], "pct5x5": [0.0, 0.25, 0.0, 0.25]}
    params = {f"fire{i + 2}.{key}": values[i] for key, values in per.items() for i in range(4)}
    trial = FixedTrial({**base, **params, "depth": 2})
    space.sample(trial, (1, 28, 28), 10)
    assert sorted(k for k in trial.params if k.startswith("fire")) == [
        "fire2.pct3x3",
        "fire2.pct5x5",
        "fire2.sr",
        "fire3.pct3x3",
        "fire3.pct5x5",
        "fire3.sr",
    ]
    spec = space.sample(FixedTrial({**base, **params, "depth": 4}), (1, 28, 28), 10)
    # e_i = 32, 32, 64, 64 with each module's own SR and kernel mix.
    assert [f.squeeze for f in fires(spec)] == [4, 8, 32, 48]
    assert [f.mix for f in fires(spec)] == [{1: 32}, {1: 16, 3: 8, 5: 8}, {1: 32, 3: 32}, {3: 48, 5: 16}]


def test_random_per_module_trials_draw_one_set_per_module() -> None:
    space = load_space("fire_per_module")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    depths = set()
    for _ in range(30):
        trial = study.ask()
        space.sample(trial, (1, 28, 28), 10)
        depth = trial.params["depth"]
        depths.add(depth)
        expected = {f"fire{i + 2}.{k}" for i in range(depth) for k in ("sr", "pct3x3", "pct5x5")}
        assert {k for k in trial.params if k.startswith("fire")} == expected
        study.tell(trial, 0.0)
    assert len(depths) >= 3


@pytest.mark.parametrize("name", ["fire", "fire_per_module"])
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
def test_random_trials_are_valid_networks_or_infeasible(name: str, shape: tuple[int, int, int]) -> None:
    space = load_space(name)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    feasible = 0
    for _ in range(200):
        trial = study.ask()
        try:
            spec = space.sample(trial, shape, 7)
        except InfeasibleArchitecture:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            continue
        assert spec.validate()["gap"] == (7,)
        assert spec.input == shape
        feasible += 1
        study.tell(trial, 0.0)
    assert feasible / 200 > 0.9


def test_overlapping_kernel_shares_make_some_samples_infeasible_and_nothing_else() -> None:
    space = TemplateSpace.from_dict(
        {"pct3x3": {"float": [0.5, 1.0], "step": 0.25}, "pct5x5": {"categorical": [0.0, 0.5]}}
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    reasons = []
    for _ in range(40):
        trial = study.ask()
        try:
            space.sample(trial, (1, 8, 8), 10)
        except InfeasibleArchitecture as exc:
            assert trial.params["pct3x3"] + trial.params["pct5x5"] > 1
            reasons.append(exc.reason)
    assert reasons and all("exceeds 1" in r for r in reasons)


def test_fixed_trial_value_outside_a_keys_domain_is_infeasible() -> None:
    # Optuna only warns about a FixedTrial value outside the distribution; the space refuses it.
    with (
        pytest.warns(UserWarning, match="out of the range"),
        pytest.raises(
            InfeasibleArchitecture, match=r"'depth' = 0 is outside its domain: an integer in \[1, 64\]"
        ),
    ):
        fire_net(depth=0)
    with (
        pytest.warns(UserWarning, match="out of the range"),
        pytest.raises(
            InfeasibleArchitecture, match=r"'sr' = 1.5 is outside its domain: a number in \(0, 1\]"
        ),
    ):
        fire_net(sr=1.5)


def test_infeasible_architecture_is_not_a_user_error() -> None:
    assert not issubclass(InfeasibleArchitecture, ArchsearchError)
    assert InfeasibleArchitecture("why").reason == "why"


def test_grid_lists_the_paper_sr_sweep_and_grid_sampler_runs_it() -> None:
    space = load_space("sr_grid")
    grid = space.grid()
    assert grid == {"sr": [0.125, 0.25, 0.5, 0.75, 1.0]}
    squeezes = {}

    def objective(trial: optuna.Trial) -> float:
        spec = space.sample(trial, (1, 8, 8), 10)
        squeezes[trial.params["sr"]] = [f.squeeze for f in fires(spec)]
        return 0.0

    study = optuna.create_study(sampler=optuna.samplers.GridSampler(grid, seed=0))
    study.optimize(objective)
    # e_i = 32, 32, 64, 64; SR 1.0 is clamped to e_i - 1.
    assert squeezes == {
        0.125: [4, 4, 8, 8],
        0.25: [8, 8, 16, 16],
        0.5: [16, 16, 32, 32],
        0.75: [24, 24, 48, 48],
        1.0: [31, 31, 63, 63],
    }


def test_grid_refuses_continuous_floats_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"fire\.yaml key 'sr' is a continuous float"):
        load_space("fire").grid()


def test_grid_expands_per_module_parameters_when_depth_is_fixed() -> None:
    raw = {"depth": 3, "dropout": 0.1, "per_module": {"sr": {"categorical": [0.25, 0.5]}}}
    grid = TemplateSpace.from_dict(raw).grid()
    assert grid == {"fire2.sr": [0.25, 0.5], "fire3.sr": [0.25, 0.5], "fire4.sr": [0.25, 0.5]}
    ints = TemplateSpace.from_dict({"base_e": {"int": [16, 48], "step": 16}, "pools": {"int": [1, 3]}}).grid()
    assert ints == {"base_e": [16, 32, 48], "pools": [1, 2, 3]}
    stepped = TemplateSpace.from_dict({"dropout": {"float": [0.0, 0.3], "step": 0.1}}).grid()
    assert stepped == {"dropout": [0.0, 0.1, 0.2, 0.3]}
    with pytest.raises(ConfigError, match=r"key 'per_module\.sr' names one parameter per Fire module"):
        TemplateSpace.from_dict({**raw, "depth": {"int": [2, 4]}}).grid()


def test_load_space_by_name_or_path(tmp_path: Path) -> None:
    space = load_space("fire")
    assert (space.name, space.path) == ("fire", SEARCH_SPACES_DIR / "fire.yaml")
    copy = tmp_path / "mine.yaml"
    copy.write_text((SEARCH_SPACES_DIR / "fire.yaml").read_text())
    mine = load_space(copy)
    assert (mine.name, mine.path) == ("mine", copy)
    assert load_space(str(copy)).to_dict() == space.to_dict()


def test_to_dict_round_trips_with_defaults_filled_in() -> None:
    for name in ("fire", "fire_per_module", "sr_grid"):
        space = load_space(name)
        again = TemplateSpace.from_dict(yaml.safe_load(yaml.safe_dump(space.to_dict())), name=name)
        assert again.to_dict() == space.to_dict()
        assert again.distributions() == space.distributions()
    sr_grid = load_space("sr_grid").to_dict()
    assert (sr_grid["stem_stride"], sr_grid["min_spatial"], sr_grid["pct5x5"]) == (1, 2, 0.0)
    assert "sr" not in load_space("fire_per_module").to_dict()


def test_distribution_syntax_maps_to_optuna_distributions(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(
        "stem_width: {int: [16, 64], step: 16}\n"
        "base_e: {int: [8, 128], log: true}\n"
        "sr: {float: [1e-2, 1.0], log: true}\n"
        "dropout: {float: [0.0, 0.5], step: 0.25}\n"
        "pct3x3: {float: [0, 1]}\n"
        "bypass: {categorical: [none, simple, complex]}\n"
        "bn: {categorical: [true, false]}\n"
        "depth: 3\n"
    )
    d = load_space(path).distributions()
    assert d == {
        "stem_width": IntDistribution(16, 64, step=16),
        "base_e": IntDistribution(8, 128, log=True),
        "sr": FloatDistribution(0.01, 1.0, log=True),
        "pct3x3": FloatDistribution(0.0, 1.0),
        "dropout": FloatDistribution(0.0, 0.5, step=0.25),
        "bypass": CategoricalDistribution(["none", "simple", "complex"]),
        "bn": CategoricalDistribution([True, False]),
    }


BAD_FILES = [
    ("depth: {uniform: [2, 6]}\n", "key 'depth' has unknown distribution type 'uniform'"),
    ("depth: {int: [2, 6], float: [2, 6]}\n", "key 'depth' has several distribution types (int, float)"),
    ("depth: {int: [6, 2]}\n", "key 'depth' has low 6 > high 2"),
    (
        "base_e: {int: [16, 64], step: 20}\n",
        "key 'base_e' has step 20, which does not divide high - low = 48",
    ),
    ("dropout: {float: [0.0, 0.5], step: 0.2}\n", "key 'dropout' has step 0.2, which does not divide"),
    (
        "sr: {float: [0.0, 0.5], log: true}\n",
        "key 'sr' has log: true with low 0.0; a log scale needs low > 0",
    ),
    ("sr: {float: [0.1, 0.5], log: true, step: 0.1}\n", "key 'sr' sets both 'step' and 'log: true'"),
    ("bypass: {categorical: []}\n", "key 'bypass' has no choices"),
    (
        "bypass: {categorical: [none, dense]}\n",
        "key 'bypass' has choice 'dense'; every choice must be one of",
    ),
    ("depht: 4\n", "has unknown key 'depht' (did you mean 'depth'?); allowed keys: stem_width"),
    (
        "depth: {int: [2, 6]\nsr: 0.5\n",
        "is not valid YAML: expected ',' or '}', but got '<scalar>' at line 2",
    ),
    ("depth: {float: [2, 6]}\n", "key 'depth' takes integers; use {int: [low, high]}"),
    ("sr: {int: [0, 1]}\n", "key 'sr' takes numbers; use {float: [low, high]}"),
    ("depth: 0\n", "key 'depth' is 0; allowed: an integer in [1, 64], or a distribution"),
    ("sr: 1.5\n", "key 'sr' is 1.5; allowed: a number in (0, 1]"),
    ("bn: yes please\n", "key 'bn' is 'yes please'; allowed: true or false"),
    ("depth: {int: [0, 4]}\n", "key 'depth' has bound 0, outside what the key allows: an integer in [1, 64]"),
    ("depth: {int: [2, 6], stepp: 2}\n", "key 'depth' has option 'stepp', which int does not take"),
    ("depth: {int: 4}\n", "key 'depth' must be {int: [low, high]}, got 4"),
    ("stem_kernel: {int: [3, 7]}\n", "key 'stem_kernel' would draw even values; use an even step"),
    ("pct3x3: 0.75\npct5x5: 0.5\n", "keys 'pct3x3' and 'pct5x5' can never sum to <= 1"),
    (
        "sr: 0.5\nper_module: {sr: {float: [0.1, 0.5]}}\n",
        "sets 'sr' both at the top level and under 'per_module'",
    ),
    ("per_module: {depth: 3}\n", "key 'per_module' has 'depth', which is not drawn per module"),
    ("per_module: {sr: {categorical: [0]}}\n", "key 'per_module.sr' has choice 0; every choice must be"),
    ("- depth\n", "must be a mapping of keys to values or distributions"),
    ("", "is empty"),
]


@pytest.mark.parametrize(("text", "message"), BAD_FILES, ids=[m.split(";")[0][:40] for _, m in BAD_FILES])
def test_bad_space_file_is_one_sentence_naming_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_space(path)
    sentence = str(info.value)
    assert sentence.startswith(f"{path} "), sentence
    assert message in sentence, sentence
    assert sentence.endswith(".") and "\n" not in sentence


def test_unknown_space_name_lists_the_shipped_spaces() -> None:
    with pytest.raises(
        ConfigError, match=r"search_spaces 'firee' not found in .*; available: fire, fire_per_module"
    ):
        load_space("firee")


def test_template_hash_follows_content_not_name_or_description() -> None:
    fire = load_space("fire")
    raw = fire.to_dict()
    same = TemplateSpace.from_dict({**raw, "description": "other words"}, name="other")
    assert same.hash == fire.hash and len(fire.hash) == 12
    assert TemplateSpace.from_dict({**raw, "depth": 3}).hash != fire.hash


def test_runaway_sizes_are_refused_when_the_space_is_read() -> None:
    from archsearch.errors import ConfigError
    from archsearch.search.space import space_from_dict

    with pytest.raises(ConfigError, match=r"depth.*an integer in \[1, 64\]"):
        space_from_dict({"depth": {"int": [2, 1000000]}}, "s")


def test_a_node_wider_than_the_cap_is_one_sentence() -> None:
    from archsearch.errors import SpecError
    from archsearch.net.spec import NetSpec

    raw = {
        "name": "x",
        "input": [1, 8, 8],
        "num_classes": 10,
        "nodes": [
            {"name": "c1", "op": "conv", "out": 100000000, "kernel": 3},
            {"name": "gap", "op": "global_avgpool"},
        ],
    }
    with pytest.raises(SpecError, match="field 'out' must be at most 65536 channels, got 100000000"):
        NetSpec.from_dict(raw)
