"""Deploy costs of a NetSpec: the shipped model's size and the activation memory it needs.

Both come from the spec and its inferred shapes alone, like the rest of :mod:`archsearch.net.cost`:

- ``model_bytes``: the weights as a deploy converter stores them, at ``bytes_per_element``,
  plus :data:`MODEL_OVERHEAD_BYTES` for the graph itself. Batch norm is folded into the
  convolution before it (as ONNX export in eval mode and every inference runtime do), so a
  batch norm's scale and shift cost nothing and a conv without a bias gains one. Checked
  against exported ONNX files (tests/test_deploy.py): within 5% for fire-space nets, 25% for
  a 200-parameter toy whose file is mostly graph.
- ``peak_activation_bytes``: the largest set of node outputs alive at once when the nodes run
  in spec order (the order :class:`archsearch.net.model.GraphNet` runs them). The input is
  alive throughout (the caller holds it); each node's output is alive from when it is
  computed until its last consumer has run;
  while a node runs, its inputs and its output are alive together. Per batch of
  ``batch_size`` at ``bytes_per_element``. Temporaries inside one node (a Fire module's
  squeeze output and branch outputs before the concatenation) are not counted: they depend on
  the runtime's kernels, not on the graph.
"""

from __future__ import annotations

import math

from archsearch.net.nodes import ConvNode, FireNode, Node
from archsearch.net.spec import NetSpec

__all__ = [
    "ALIAS_OPS",
    "MODEL_NODE_BYTES",
    "MODEL_OVERHEAD_BYTES",
    "deploy_params",
    "live_elements",
    "model_bytes",
    "peak_activation_bytes",
]

#: The graph, names and tensor headers of an ONNX file: a fixed header plus a cost per graph
#: node, each kernel but batch norm (folded) becoming one. Fitted to exports of fire_digits,
#: fire_mnist and squeezenet1_1 (5.4-14 KB over 28-65 nodes) by archsearch.hardware.ort.
MODEL_OVERHEAD_BYTES = 256
MODEL_NODE_BYTES = 200


def deploy_params(node: Node, params: int, out_channels: int) -> int:
    """A node's ``params`` after folding its batch norms into their convolutions."""
    if isinstance(node, ConvNode) and node.bn:
        # The BN's 2C scale and shift go; a conv without a bias gains C for the folded shift.
        return params - 2 * out_channels + (0 if node.bias else out_channels)
    if isinstance(node, FireNode) and node.bn:
        return params - 2 * (node.squeeze + sum(ch for _, ch in node.expand))
    return params


def model_bytes(net: NetSpec, bytes_per_element: int = 4) -> int:
    """Deployed weights at ``bytes_per_element`` plus the graph overhead (see the module docstring)."""
    from archsearch.net.ops import OPS

    shapes = {"input": net.input, **net.validate()}
    sources = net.input_names()
    weights = graph_nodes = 0
    for node in net.nodes:
        ins, out = [shapes[s] for s in sources[node.name]], shapes[node.name]
        weights += deploy_params(node, OPS[node.op].cost(node, ins, out, 1).params, out[0])
        graph_nodes += sum(k.kind != "batchnorm" for k in OPS[node.op].kernels(node, ins, out, 1))
    return bytes_per_element * weights + MODEL_OVERHEAD_BYTES + MODEL_NODE_BYTES * graph_nodes


#: Ops whose output is their input's memory at inference: dropout returns its input in eval
#: mode, flatten is a view. They allocate nothing and keep their input's buffer alive.
ALIAS_OPS = ("dropout", "flatten")


def live_elements(net: NetSpec) -> list[int]:
    """Elements per image alive while each node runs, in spec order (see the module docstring).

    Values are tracked per buffer: an aliasing node (:data:`ALIAS_OPS`) shares its input's.
    """
    shapes = {"input": net.input, **net.validate()}
    sources = net.input_names()
    order = [n.name for n in net.nodes]
    ops = {n.name: n.op for n in net.nodes}
    buffer = {"input": "input"}
    for name in order:
        buffer[name] = buffer[sources[name][0]] if ops[name] in ALIAS_OPS else name
    last_use = {"input": 0}
    for i, name in enumerate(order):
        for src in sources[name]:
            last_use[buffer[src]] = i
    # The caller holds the input throughout (torch's module call and a runtime's feed alike),
    # and the output is alive until it is returned.
    last_use["input"] = last_use[buffer[order[-1]]] = len(order) - 1
    live = []
    for i, name in enumerate(order):
        alive = {buffer[v] for v in ("input", *order[:i]) if last_use.get(buffer[v], -1) >= i}
        alive.add(buffer[name])
        live.append(sum(math.prod(shapes[v]) for v in alive))
    return live


def peak_activation_bytes(net: NetSpec, batch_size: int = 1, bytes_per_element: int = 4) -> int:
    """The peak of :func:`live_elements` for a batch, in bytes."""
    return batch_size * bytes_per_element * max(live_elements(net))
