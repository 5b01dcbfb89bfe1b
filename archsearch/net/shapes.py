"""Building blocks of the ops' shape rules: window arithmetic and the checks that name a bad field.

Every check raises :class:`SpecError` with one sentence that starts with ``where`` (the node).
"""

from __future__ import annotations

from archsearch.errors import SpecError
from archsearch.net.nodes import Shape

__all__ = ["check_spatial", "feature_map", "out_size", "require_positive"]


def out_size(size: int, kernel: int, stride: int, padding: int, dilation: int, ceil: bool) -> int:
    """Output length of a sliding window along one axis, as torch's conv and pool layers compute it."""
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    if ceil:
        out = -(-span // stride) + 1
        # PyTorch drops a last window that would start entirely in the right padding.
        if (out - 1) * stride >= size + padding:
            out -= 1
        return out
    return span // stride + 1


#: The most channels (or units) a node may have: a typo such as `out: 100000000` would otherwise
#: try to allocate gigabytes of weights.
MAX_WIDTH = 65536


def require_positive(where: str, key: str, value: int) -> None:
    """Raise unless field ``key`` is a positive integer (at most :data:`MAX_WIDTH` for ``out``)."""
    if value < 1:
        raise SpecError(f"{where} field {key!r} must be a positive integer, got {value}.")
    if key == "out" and value > MAX_WIDTH:
        raise SpecError(f"{where} field 'out' must be at most {MAX_WIDTH} channels, got {value}.")


def feature_map(where: str, shape: Shape, op: str) -> tuple[int, int, int]:
    """``shape`` as (C, H, W); raise if the input is a flat vector."""
    if len(shape) != 3:
        raise SpecError(
            f"{where} (op {op!r}) needs a feature map [C, H, W] as input, got flat shape {list(shape)}."
        )
    return shape[0], shape[1], shape[2]


def check_spatial(where: str, oh: int, ow: int, h: int, w: int, fields: str) -> None:
    """Raise if a window op shrank an ``h x w`` map to nothing, naming the ``fields`` to blame."""
    if oh < 1 or ow < 1:
        raise SpecError(
            f"{where} shrinks its {h}x{w} input to {oh}x{ow} through fields {fields}; the spatial "
            "size must stay >= 1 (a smaller kernel or stride, fewer pools, or a larger input)."
        )
