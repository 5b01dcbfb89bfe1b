"""archsearch.devices: the one resolver of device settings, on machines with and without GPUs.

torch.cuda.is_available, torch.cuda.device_count and torch.backends.mps.is_available are
monkeypatched, so every machine runs every case (nothing here touches a device).
"""

from __future__ import annotations

import pytest
import torch

from archsearch.devices import DEVICE_KINDS, device_names, resolve_device
from archsearch.errors import ConfigError


def _machine(monkeypatch: pytest.MonkeyPatch, cuda: int = 0, mps: bool = False) -> None:
    """Pretend torch sees ``cuda`` CUDA devices and, or not, an MPS device."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)


@pytest.mark.parametrize(
    ("cuda", "mps", "expected"),
    [(0, False, "cpu"), (0, True, "mps"), (1, False, "cuda"), (2, True, "cuda")],
)
def test_auto_prefers_cuda_then_mps_then_the_cpu(
    monkeypatch: pytest.MonkeyPatch, cuda: int, mps: bool, expected: str
) -> None:
    _machine(monkeypatch, cuda, mps)
    assert resolve_device("auto") == torch.device(expected)


def test_auto_picks_only_among_the_callers_kinds_in_its_order(monkeypatch: pytest.MonkeyPatch) -> None:
    _machine(monkeypatch, cuda=0, mps=True)
    assert resolve_device("auto", kinds=("cuda", "cpu")).type == "cpu"  # a profile's kinds: no MPS
    assert resolve_device("auto", kinds=("cuda", "cpu", "mps")).type == "cpu"  # MPS only when named
    assert resolve_device("mps", kinds=("cuda", "cpu", "mps")).type == "mps"
    _machine(monkeypatch, cuda=1, mps=True)
    assert resolve_device("auto", kinds=("cuda", "cpu")).type == "cuda"


@pytest.mark.parametrize("name", ["cpu", "cuda", "cuda:0", "cuda:1", "mps"])
def test_explicit_devices_resolve_where_torch_has_them(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    _machine(monkeypatch, cuda=2, mps=True)
    assert resolve_device(name) == torch.device(name)


@pytest.mark.parametrize("name", ["gpu", "warp:0", "cuda:one", "meta", ""])
def test_an_unknown_device_is_one_sentence_naming_the_key_and_the_names_allowed(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    _machine(monkeypatch)
    with pytest.raises(ConfigError) as caught:
        resolve_device(name, "trainer.device")
    assert str(caught.value) == f"trainer.device is {name!r}; allowed: auto, cpu, cuda, cuda:N, mps."


def test_a_kind_the_caller_does_not_take_is_unknown_to_it(monkeypatch: pytest.MonkeyPatch) -> None:
    _machine(monkeypatch, mps=True)
    with pytest.raises(ConfigError) as caught:
        resolve_device("mps", "device", kinds=("cuda", "cpu"))
    assert str(caught.value) == "device is 'mps'; allowed: auto, cpu, cuda, cuda:N."


@pytest.mark.parametrize(
    ("name", "cuda", "mps", "message"),
    [
        ("cuda", 0, False, "x.device is 'cuda' but torch sees no CUDA device here; allowed here: auto, cpu."),
        (
            "cuda:1",
            0,
            True,
            "x.device is 'cuda:1' but torch sees no CUDA device here; allowed here: auto, cpu, mps.",
        ),
        (
            "mps",
            1,
            False,
            "x.device is 'mps' but torch sees no MPS device here; allowed here: auto, cpu, cuda, cuda:N.",
        ),
        (
            "cuda:2",
            2,
            False,
            "x.device is 'cuda:2' but torch sees 2 CUDA device(s) here; "
            "allowed here: auto, cpu, cuda, cuda:N with N below 2.",
        ),
    ],
)
def test_an_unavailable_device_is_one_sentence_naming_what_this_machine_allows(
    monkeypatch: pytest.MonkeyPatch, name: str, cuda: int, mps: bool, message: str
) -> None:
    _machine(monkeypatch, cuda, mps)
    with pytest.raises(ConfigError) as caught:
        resolve_device(name, "x.device")
    assert str(caught.value) == message


def test_the_names_listed_follow_the_kinds() -> None:
    assert device_names() == device_names(DEVICE_KINDS) == "auto, cpu, cuda, cuda:N, mps"
    assert device_names(("cuda", "cpu")) == "auto, cpu, cuda, cuda:N"
    assert device_names(("cpu",)) == "auto, cpu"
