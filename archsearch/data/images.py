"""Images read batch by batch from a uint8 array (memory-mapped), normalised as they are read.

An :class:`ImageArray` stands where a Dataset would hold a float32 tensor: ``len(x)``,
``x[idx]`` (a float32 batch, normalised with the training split's mean and std) and
``x.to(device)`` behave as they do on a tensor, so the trainer and ``evaluate`` take either.
Only the rows a batch asks for are read, so a memory-mapped cache larger than RAM still
trains; the kernel's page cache keeps what fits.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import torch

__all__ = ["ImageArray", "Images"]


class ImageArray:
    """The rows ``rows`` of a uint8 N x C x H x W array, normalised per batch on access.

    Args:
        images: the whole uint8 array (usually ``np.load(path, mmap_mode="r")``).
        rows: which rows of ``images`` this split is, in order.
        mean: per-channel mean of the raw training pixels.
        std: per-channel standard deviation of the raw training pixels.
        device: where batches are returned.
        source: the ``.npy`` file ``images`` maps, so a pickled view reopens it instead of
            carrying the pixels.
    """

    def __init__(
        self,
        images: np.ndarray,
        rows: np.ndarray,
        mean: Sequence[float],
        std: Sequence[float],
        *,
        device: torch.device | str = "cpu",
        source: Path | None = None,
    ) -> None:
        self.images = images
        self.rows = np.asarray(rows, dtype=np.int64)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.device = torch.device(device)
        self.source = source
        self._mean = torch.tensor(self.mean, device=self.device).view(1, -1, 1, 1)
        self._std = torch.tensor(self.std, device=self.device).view(1, -1, 1, 1)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.rows), *self.images.shape[1:]))

    def to(self, device: torch.device | str, **_: Any) -> ImageArray:
        """The same view returning batches on ``device`` (the pixels stay where they are)."""
        if torch.device(device) == self.device:
            return self
        return ImageArray(self.images, self.rows, self.mean, self.std, device=device, source=self.source)

    def __getitem__(self, idx: Any) -> torch.Tensor:
        """A normalised float32 batch: ``idx`` is a slice, an int, or an index array/tensor."""
        if isinstance(idx, torch.Tensor):
            idx = idx.cpu().numpy()
        picked = self.rows[idx]
        if picked.ndim == 0:
            return self[np.asarray([int(idx)])][0]
        # Fancy indexing copies just these rows out of the map, which reads only their pages.
        batch = torch.from_numpy(np.ascontiguousarray(self.images[picked]))
        batch = batch.to(self.device, non_blocking=True).float()
        return (batch - self._mean) / self._std

    def numpy(self) -> np.ndarray:
        """Every row as raw uint8 (for tests and small data only: it reads the whole split)."""
        return np.asarray(self.images[self.rows])

    def __getstate__(self) -> dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if k not in ("_mean", "_std")}
        if self.source is not None:
            state["images"] = None  # reopened from the file, never copied through a pickle
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        images = state["images"]
        if images is None:
            images = np.load(state["source"], mmap_mode="r")
        self.__init__(  # type: ignore[misc]
            images, state["rows"], state["mean"], state["std"], device=state["device"], source=state["source"]
        )


#: What a Dataset's ``*_x`` fields hold: in-memory normalised tensors, or views of a cache.
Images: TypeAlias = torch.Tensor | ImageArray
