"""Scoring a candidate on the supernet: its slice, batch-norm statistics of its own, validation accuracy.

A candidate's batch-norm statistics cannot be shared: each subnetwork's activations have their
own. So the candidate is built as a stand-alone module, given the banks' weights, and its
statistics are recalibrated on a fixed set of training batches (the same for every candidate,
so scores compare) before it is evaluated on the validation split.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from archsearch.net.model import build
from archsearch.net.spec import NetSpec
from archsearch.supernet.network import Supernet
from archsearch.train.evaluate import evaluate

if TYPE_CHECKING:
    from archsearch.data.base import DatasetLike

__all__ = ["Scorer", "recalibrate"]


def recalibrate(module: nn.Module, batches: Sequence[torch.Tensor]) -> None:
    """Replace every batch norm's running statistics by their exact average over ``batches``.

    Only the batch norms' ``running_mean``, ``running_var`` and ``num_batches_tracked`` change:
    no gradient is taken, dropout is off while the batches run, and each batch norm's momentum
    is restored afterwards.
    """
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    was_training = module.training
    try:
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average: every batch weighs the same
        module.eval()
        for m in norms:
            m.train()
        with torch.no_grad():
            for xb in batches:
                module(xb)
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        module.train(was_training)


class Scorer:
    """Scores networks on a trained supernet: ``scorer(spec)`` is its validation accuracy.

    Args:
        supernet: the trained banks.
        data: the dataset the supernet was trained on.
        batch_size: images per recalibration batch (the trainer's batch size).
        bn_batches: training batches the statistics are recalibrated on.
        eval_images: the first this many validation images are scored (None: all of them).
        eval_batch_size: validation batch size.
        seed: chooses the recalibration batches.
    """

    def __init__(
        self,
        supernet: Supernet,
        data: DatasetLike,
        *,
        batch_size: int,
        bn_batches: int,
        eval_images: int | None,
        eval_batch_size: int = 256,
        seed: int = 0,
    ) -> None:
        self.supernet = supernet
        self.device = next(supernet.parameters()).device
        generator = torch.Generator().manual_seed(seed)
        perm = torch.randperm(len(data.train_y), generator=generator)
        self.batches = [
            data.train_x[idx].to(self.device)
            for idx in perm[: batch_size * bn_batches].split(batch_size)
            if len(idx) > 1
        ]
        n = len(data.val_y) if eval_images is None else min(eval_images, len(data.val_y))
        self.val_x = data.val_x[:n].to(self.device)
        self.val_y = data.val_y[:n].to(self.device)
        self.eval_batch_size = eval_batch_size

    def module(self, spec: NetSpec) -> nn.Module:
        """``spec``'s stand-alone network with the supernet's weights and recalibrated statistics."""
        module = build(spec).to(self.device)
        self.supernet.load_into(spec, module)
        recalibrate(module, self.batches)
        return module

    def __call__(self, spec: NetSpec) -> float:
        return evaluate(self.module(spec), self.val_x, self.val_y, self.eval_batch_size, self.device)
