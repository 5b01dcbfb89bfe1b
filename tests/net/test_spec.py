"""NetSpec as data: round trips, a hash that follows the graph, and one-sentence validation errors."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from archsearch.errors import SpecError
from archsearch.net.spec import NetSpec

SEEDS = range(60)


def tiny(nodes: list[dict[str, Any]], input: tuple[int, int, int] = (3, 16, 16)) -> dict[str, Any]:
    return {"name": "tiny", "input": list(input), "num_classes": 4, "nodes": nodes}


VALID = tiny(
    [
        {"name": "conv1", "op": "conv", "out": 8, "kernel": 3},
        {"name": "fire2", "op": "fire", "squeeze": 4, "expand": {1: 4, 3: 4}},
        {"name": "by2", "op": "add", "inputs": ["conv1", "fire2"], "project": True},
        {"name": "pool2", "op": "maxpool", "kernel": 2},
        {"name": "head", "op": "conv", "out": "num_classes", "kernel": 1},
        {"name": "gap", "op": "global_avgpool"},
    ]
)


def test_reference_specs_survive_dict_and_yaml_round_trips(reference_specs: dict[str, NetSpec]) -> None:
    for spec in reference_specs.values():
        assert NetSpec.from_dict(spec.to_dict()) == spec
        assert NetSpec.from_yaml(spec.to_yaml()) == spec
        assert NetSpec.from_yaml(spec.to_yaml()).hash == spec.hash


@pytest.mark.parametrize("seed", SEEDS)
def test_random_specs_survive_dict_and_yaml_round_trips(
    make_random_spec: Callable[[int], NetSpec], seed: int
) -> None:
    spec = make_random_spec(seed)
    assert NetSpec.from_dict(spec.to_dict()) == spec
    again = NetSpec.from_yaml(spec.to_yaml())
    assert again == spec
    assert again.hash == spec.hash


def test_to_dict_writes_only_non_default_fields() -> None:
    spec = NetSpec.from_dict(VALID)
    assert spec.to_dict()["nodes"][0] == {"name": "conv1", "op": "conv", "out": 8, "kernel": 3}
    assert spec.to_dict()["nodes"][4]["out"] == "num_classes"


def test_hash_ignores_the_spec_name_and_expand_key_order() -> None:
    base = NetSpec.from_dict(VALID)
    renamed = copy.deepcopy(VALID)
    renamed["name"] = "something_else"
    reordered = copy.deepcopy(VALID)
    reordered["nodes"][1]["expand"] = {3: 4, 1: 4}
    assert list(reordered["nodes"][1]["expand"]) == [3, 1]
    assert NetSpec.from_dict(renamed).hash == base.hash
    assert NetSpec.from_dict(reordered).hash == base.hash
    assert NetSpec.from_dict(reordered) == base
    assert len(base.hash) == 12
    assert base.hash == NetSpec.from_dict(copy.deepcopy(VALID)).hash


def test_hash_treats_spelled_out_defaults_as_the_same_graph() -> None:
    base = NetSpec.from_dict(VALID).hash
    explicit = copy.deepcopy(VALID)
    explicit["nodes"][1]["inputs"] = ["conv1"]  # the previous node, as if left out
    explicit["nodes"][0]["padding"] = 1  # "same" for a 3x3 kernel
    explicit["nodes"][3]["stride"] = 2  # a pool's stride defaults to its kernel
    assert NetSpec.from_dict(explicit).hash == base


@pytest.mark.parametrize(
    ("node", "field", "value"),
    [
        (0, "out", 9),  # a channel count
        (0, "kernel", 5),
        (1, "expand", {1: 4, 3: 5}),
        (1, "expand", {1: 4, 5: 4}),  # same channels, another kernel
        (3, "inputs", ["fire2"]),  # the pool reads the fire module, skipping the bypass
        (3, "ceil_mode", True),
        (4, "act", "none"),
    ],
)
def test_hash_changes_with_any_change_to_the_graph(node: int, field: str, value: Any) -> None:
    changed = copy.deepcopy(VALID)
    changed["nodes"][node][field] = value
    assert NetSpec.from_dict(changed).hash != NetSpec.from_dict(VALID).hash


def test_hash_changes_with_input_shape_and_class_count() -> None:
    spec = NetSpec.from_dict(VALID)
    assert spec.retarget(input=(3, 32, 32)).hash != spec.hash
    assert spec.retarget(num_classes=7).hash != spec.hash
    assert spec.retarget(num_classes=7).validate()["gap"] == (7,)


def spec_error(nodes: list[dict[str, Any]], input: tuple[int, int, int] = (3, 16, 16)) -> str:
    with pytest.raises(SpecError) as info:
        NetSpec.from_dict(tiny(nodes, input))
    message = str(info.value)
    assert "\n" not in message and message.endswith(".")
    return message


def test_unknown_op_is_rejected_naming_node_and_field() -> None:
    msg = spec_error([{"name": "c1", "op": "conv3d", "out": 4}])
    assert "'c1'" in msg and "field 'op'" in msg and "'conv3d'" in msg and "fire" in msg


def test_unknown_field_is_rejected_naming_node_and_field() -> None:
    msg = spec_error(
        [{"name": "c1", "op": "conv", "out": 4, "kernal": 3}, {"name": "g", "op": "global_avgpool"}]
    )
    assert "'c1'" in msg and "'kernal'" in msg and "kernel" in msg


def test_missing_input_is_rejected_naming_node_and_field() -> None:
    msg = spec_error(
        [
            {"name": "c1", "op": "conv", "out": 4},
            {"name": "sum", "op": "add", "inputs": ["c1", "nowhere"]},
            {"name": "g", "op": "global_avgpool"},
        ]
    )
    assert "'sum'" in msg and "field 'inputs'" in msg and "'nowhere'" in msg


@pytest.mark.parametrize("target", ["later", "loop"])
def test_cyclic_or_forward_input_is_rejected_naming_node_and_field(target: str) -> None:
    msg = spec_error(
        [
            {"name": "c1", "op": "conv", "out": 4},
            {"name": "loop", "op": "add", "inputs": ["c1", target]},
            {"name": "later", "op": "conv", "out": 4},
            {"name": "g", "op": "global_avgpool"},
        ]
    )
    assert "'loop'" in msg and "field 'inputs'" in msg and f"'{target}'" in msg and "earlier" in msg


def test_add_of_mismatched_channels_without_project_is_rejected_with_a_hint() -> None:
    nodes: list[dict[str, Any]] = [
        {"name": "c1", "op": "conv", "out": 4},
        {"name": "c2", "op": "conv", "out": 6},
        {"name": "sum", "op": "add", "inputs": ["c1", "c2"]},
        {"name": "g", "op": "global_avgpool"},
        {"name": "fc", "op": "linear", "out": "num_classes"},
    ]
    msg = spec_error(nodes)
    assert "'sum'" in msg and "field 'inputs'" in msg and "[4, 16, 16]" in msg and "project: true" in msg
    nodes[2]["project"] = True
    assert NetSpec.from_dict(tiny(nodes)).validate()["sum"] == (6, 16, 16)


def test_add_of_mismatched_spatial_size_is_rejected_even_with_project() -> None:
    msg = spec_error(
        [
            {"name": "c1", "op": "conv", "out": 4},
            {"name": "c2", "op": "conv", "out": 4, "stride": 2},
            {"name": "sum", "op": "add", "inputs": ["c1", "c2"], "project": True},
            {"name": "g", "op": "global_avgpool"},
        ]
    )
    assert "'sum'" in msg and "field 'inputs'" in msg and "[4, 8, 8]" in msg


def test_spatial_size_shrinking_to_zero_is_rejected_naming_node_and_fields() -> None:
    msg = spec_error(
        [
            {"name": "c1", "op": "conv", "out": 4, "stride": 2},
            {"name": "p1", "op": "maxpool", "kernel": 3, "stride": 3},
            {"name": "p2", "op": "maxpool", "kernel": 3},
            {"name": "g", "op": "global_avgpool"},
        ],
        input=(3, 12, 12),
    )
    assert "'p2'" in msg and "2x2 input to 0x0" in msg and "'kernel'" in msg


def test_squeeze_not_below_total_expand_is_rejected_naming_node_and_field() -> None:
    msg = spec_error([{"name": "f1", "op": "fire", "squeeze": 16, "expand": {1: 8, 3: 8}}])
    assert "'f1'" in msg and "field 'squeeze' (16)" in msg and "expand channels (16)" in msg


def test_fire_without_expand_is_rejected_naming_node_and_field() -> None:
    msg = spec_error([{"name": "f1", "op": "fire", "squeeze": 4}])
    assert "'f1'" in msg and "field 'expand'" in msg


def test_even_kernel_without_explicit_padding_is_rejected_naming_node_and_field() -> None:
    msg = spec_error(
        [{"name": "c1", "op": "conv", "out": 4, "kernel": 2}, {"name": "g", "op": "global_avgpool"}]
    )
    assert "'c1'" in msg and "field 'padding'" in msg and "even kernel 2" in msg
    ok = tiny(
        [
            {"name": "c1", "op": "conv", "out": 4, "kernel": 2, "padding": 0},
            {"name": "g", "op": "global_avgpool"},
        ]
    )
    assert NetSpec.from_dict(ok).validate()["c1"] == (4, 15, 15)


@pytest.mark.parametrize(
    ("node", "field"),
    [
        ({"name": "c1", "op": "conv", "out": 0}, "'out'"),
        ({"name": "c1", "op": "conv", "out": -3}, "'out'"),
        ({"name": "c1", "op": "fire", "squeeze": 0, "expand": {1: 4}}, "'squeeze'"),
        ({"name": "c1", "op": "fire", "squeeze": 2, "expand": {1: 4, 3: 0}}, "'expand[3]'"),
    ],
)
def test_non_positive_channels_are_rejected_naming_node_and_field(node: dict[str, Any], field: str) -> None:
    msg = spec_error([node, {"name": "g", "op": "global_avgpool"}])
    assert "'c1'" in msg and field in msg and "positive" in msg


def test_wrong_field_type_and_non_mapping_node_are_rejected() -> None:
    msg = spec_error([{"name": "c1", "op": "conv", "out": 4, "kernel": "3"}])
    assert "'c1'" in msg and "'kernel'" in msg and "integer" in msg
    assert "node #0" in spec_error(["conv"])  # type: ignore[list-item]


def test_network_not_ending_in_num_classes_is_rejected() -> None:
    msg = spec_error([{"name": "c1", "op": "conv", "out": 5}, {"name": "g", "op": "global_avgpool"}])
    assert "'g'" in msg and "num_classes=4" in msg


def test_invalid_yaml_names_the_source_and_line() -> None:
    with pytest.raises(SpecError, match=r"^my\.yaml is not valid YAML: .* line 3, column 1\.$"):
        NetSpec.from_yaml("name: x\nnodes: [\n", source="my.yaml")
