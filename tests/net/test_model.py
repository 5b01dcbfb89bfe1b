"""build(spec): the torch module matches the spec's declared shapes and published parameter counts."""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import pytest
import torch
from torch import nn

from archsearch.net.layers import Fire, ProjectedAdd
from archsearch.net.model import build, count_params
from archsearch.net.spec import NetSpec

PUBLISHED_PARAMS = {"squeezenet1_0": 1_248_424, "squeezenet1_1": 1_235_496, "alexnet": 61_100_840}


# Tiny models on a shared 2-core machine run far faster without intra-op threading.
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS))
def test_built_reference_models_have_torchvisions_parameter_counts(
    reference_specs: dict[str, NetSpec], name: str
) -> None:
    assert count_params(build(reference_specs[name])) == PUBLISHED_PARAMS[name]


def test_simple_bypass_adds_no_parameters_and_complex_bypass_adds_the_projections(
    reference_specs: dict[str, NetSpec],
) -> None:
    plain = count_params(build(reference_specs["squeezenet1_0"]))
    assert count_params(build(reference_specs["squeezenet1_0_simple_bypass"])) == plain
    # Projections (1x1 conv with bias) where channels change: fire2 96->128, fire4 128->256,
    # fire6 256->384, fire8 384->512.
    projections = sum(cin * cout + cout for cin, cout in [(96, 128), (128, 256), (256, 384), (384, 512)])
    assert count_params(build(reference_specs["squeezenet1_0_complex_bypass"])) == plain + projections


def test_fire_module_output_is_expand_outputs_concatenated_in_kernel_order() -> None:
    spec = NetSpec.from_dict(
        {
            "name": "one_fire",
            "input": [4, 5, 5],
            "num_classes": 5,
            "nodes": [
                {"name": "fire", "op": "fire", "squeeze": 2, "expand": {3: 3, 1: 2}, "act": "none"},
                {"name": "gap", "op": "global_avgpool"},
            ],
        }
    )
    net = build(spec).eval()
    fire = cast(Fire, net.ops["fire"])
    x = torch.randn(1, 4, 5, 5)
    squeezed = fire.squeeze(x)
    expected = torch.cat([fire.expand[0](squeezed), fire.expand[1](squeezed)], dim=1)
    assert [cast(nn.Sequential, b)[0].kernel_size for b in fire.expand] == [(1, 1), (3, 3)]
    torch.testing.assert_close(net(x), expected.mean(dim=(2, 3)))


def test_projected_add_sums_a_1x1_projection_of_the_narrower_input() -> None:
    spec = NetSpec.from_dict(
        {
            "name": "bypass",
            "input": [2, 4, 4],
            "num_classes": 3,
            "nodes": [
                {"name": "wide", "op": "conv", "out": 3, "kernel": 3, "act": "none"},
                {"name": "sum", "op": "add", "inputs": ["input", "wide"], "project": True},
                {"name": "gap", "op": "global_avgpool"},
            ],
        }
    )
    net = build(spec).eval()
    x = torch.randn(2, 2, 4, 4)
    proj = cast(ProjectedAdd, net.ops["sum"]).proj[0]
    expected = proj(x) + net.ops["wide"](x)
    torch.testing.assert_close(net(x), expected.mean(dim=(2, 3)))
    assert count_params(net) == (3 * 2 * 9 + 3) + (2 * 3 + 3)


@pytest.mark.parametrize("seed", range(20))
def test_random_graph_trains_a_step_and_reports_its_spec_hash(
    make_random_spec: Callable[[int], NetSpec], seed: int
) -> None:
    spec = make_random_spec(seed)
    net = build(spec).train()
    out = net(torch.randn(3, *spec.input))
    assert out.shape == (3, spec.num_classes)
    # In-place activations must not break autograd anywhere in a branching graph.
    out.square().mean().backward()
    assert net.spec_hash == spec.hash
