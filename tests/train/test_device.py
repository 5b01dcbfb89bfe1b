"""trainer.device: the shared resolver (archsearch.devices) under the trainer's key, MPS included.

The machine is monkeypatched (torch.cuda / torch.backends.mps availability), so this runs anywhere.
"""

from __future__ import annotations

import pytest
import torch

from archsearch.devices import device_names
from archsearch.errors import ConfigError
from archsearch.train.device import resolve_device, resolve_precision
from archsearch.train.settings import DEVICE_NAMES, TrainerSettings


def _machine(monkeypatch: pytest.MonkeyPatch, cuda: bool, mps: bool) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: int(cuda))
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)


@pytest.mark.parametrize(
    ("cuda", "mps", "expected"), [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")]
)
def test_auto_trains_on_cuda_then_mps_then_the_cpu(
    monkeypatch: pytest.MonkeyPatch, cuda: bool, mps: bool, expected: str
) -> None:
    _machine(monkeypatch, cuda, mps)
    assert resolve_device("auto").type == expected


def test_a_missing_device_names_trainer_device_and_what_this_machine_allows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _machine(monkeypatch, cuda=False, mps=False)
    with pytest.raises(ConfigError) as caught:
        resolve_device("mps")
    assert str(caught.value) == (
        "trainer.device is 'mps' but torch sees no MPS device here; allowed here: auto, cpu."
    )
    with pytest.raises(
        ConfigError, match=r"^trainer.device is 'tpu'; allowed: auto, cpu, cuda, cuda:N, mps\.$"
    ):
        resolve_device("tpu")


def test_mps_trains_in_fp32_by_default_and_refuses_fp16() -> None:
    assert resolve_precision("auto", torch.device("mps")) == "fp32"
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        resolve_precision("fp16", torch.device("mps"))


def test_the_settings_check_and_the_resolver_allow_the_same_names() -> None:
    assert device_names() == DEVICE_NAMES
    for name in ("auto", "cpu", "cuda", "cuda:3", "mps"):
        TrainerSettings(device=name)  # well formed everywhere; the resolver says whether it is here
