"""Op modules: one nn.Module per spec op that needs more than a torch built-in."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Concat", "ConvAct", "Fire", "ProjectedAdd", "make_activation"]


def make_activation(name: str) -> nn.Module:
    """Activation by spec name; ``none`` is the identity."""
    table: dict[str, type[nn.Module]] = {
        "relu": nn.ReLU,
        "relu6": nn.ReLU6,
        "gelu": nn.GELU,
        "silu": nn.SiLU,
        "none": nn.Identity,
    }
    cls = table[name]
    return cls(inplace=True) if cls in (nn.ReLU, nn.ReLU6, nn.SiLU) else cls()


class ConvAct(nn.Sequential):
    """Conv2d -> optional BatchNorm2d -> activation."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int,
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
        groups: int = 1,
        bias: bool = True,
        bn: bool = False,
        act: str = "relu",
    ) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(in_ch, out_ch, kernel, stride, padding, dilation, groups, bias=bias)
        ]
        if bn:
            layers.append(nn.BatchNorm2d(out_ch))
        layers.append(make_activation(act))
        super().__init__(*layers)


class Fire(nn.Module):
    """SqueezeNet's Fire module with a free kernel mix in the expand layer."""

    def __init__(
        self, in_ch: int, squeeze: int, mix: dict[int, int], bn: bool = False, act: str = "relu"
    ) -> None:
        super().__init__()
        self.squeeze = ConvAct(in_ch, squeeze, 1, bn=bn, act=act)
        self.expand = nn.ModuleList(
            ConvAct(squeeze, ch, k, padding=k // 2, bn=bn, act=act) for k, ch in sorted(mix.items())
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.squeeze(x)
        return torch.cat([branch(s) for branch in self.expand], dim=1)


class ProjectedAdd(nn.Module):
    """Sum of inputs; inputs with other channel counts first go through a 1x1 conv."""

    def __init__(self, in_channels: list[int], out_ch: int, project: bool) -> None:
        super().__init__()
        self.proj = nn.ModuleList(
            nn.Conv2d(c, out_ch, 1) if project and c != out_ch else nn.Identity() for c in in_channels
        )

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        # Iterating the ModuleList directly: slicing it builds a new ModuleList per call,
        # which cost ~20x the add itself at batch 1.
        out: torch.Tensor | None = None
        for proj, x in zip(self.proj, xs, strict=True):
            y = proj(x)
            out = y if out is None else out + y
        assert out is not None
        return out


class Concat(nn.Module):
    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat(xs, dim=1)
