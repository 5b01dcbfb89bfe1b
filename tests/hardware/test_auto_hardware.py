"""hardware=auto: calibrated once per setting, cached under an overridable folder, reused, labelled."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch

from archsearch.errors import ConfigError
from archsearch.hardware import auto
from archsearch.hardware.calibrate import CalibrateConfig, run
from archsearch.hardware.latency import latency_device, profile_device
from archsearch.hardware.profile import HardwareProfile, load_hardware
from archsearch.search.settings import LatencySettings

FAKE = HardwareProfile(name="auto", peak_gflops=50.0, bandwidth_gbs=10.0, overhead_us=7.0, calibrated=True)


@pytest.fixture
def fake_calibration(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[dict[str, Any]]:
    """The cache in tmp_path and a calibration that records its arguments instead of measuring."""
    monkeypatch.setenv(auto.CACHE_ENV, str(tmp_path / "cache"))
    calls: list[dict[str, Any]] = []

    def fake(
        threads: Any, quick: Any, name: Any, seed: Any, fmt: Any, clock: Any, **kw: Any
    ) -> HardwareProfile:
        calls.append({"threads": threads, "quick": quick, "memory_format": fmt, "clock": clock, **kw})
        return dataclasses.replace(FAKE, extra={"measured": {"cpu": "Fake CPU", "host": "box"}})

    monkeypatch.setattr("archsearch.hardware.calibrate.calibrate", fake)
    return calls


def test_first_call_calibrates_and_announces_then_the_cache_is_reused(
    fake_calibration: list[dict[str, Any]], tmp_path: Path
) -> None:
    lines: list[str] = []
    first = auto.auto_profile(1, "auto", "cpu", device="cpu", log=lines.append)
    assert len(fake_calibration) == 1 and fake_calibration[0]["threads"] == 1
    assert fake_calibration[0]["clock"] == "cpu" and fake_calibration[0]["memory_format"] == "auto"
    assert "calibrating this host once" in lines[0] and "calibrated in" in lines[1]
    files = list((tmp_path / "cache").glob("*.yaml"))
    assert len(files) == 1 and "t1-channels_last-cpu" in files[0].name
    lines.clear()
    again = auto.auto_profile(1, "auto", "cpu", device="cpu", log=lines.append)
    assert len(fake_calibration) == 1 and not lines  # read back, silently
    assert again.peak_gflops == first.peak_gflops and again.extra["auto_key"]["torch"] == torch.__version__
    auto.auto_profile(2, "auto", "wall", device="cpu", log=None)  # another setting: another entry
    assert len(fake_calibration) == 2 and len(list((tmp_path / "cache").glob("*.yaml"))) == 2


def test_refresh_and_a_corrupt_entry_calibrate_again(fake_calibration: list[dict[str, Any]]) -> None:
    auto.auto_profile(1, device="cpu", log=None)
    auto.auto_profile(1, device="cpu", log=None, refresh=True)
    assert len(fake_calibration) == 2
    auto.cache_path(auto.cache_key(1, "auto", "wall", "cpu")).write_text("peak_gflops: [")
    auto.auto_profile(1, device="cpu", log=None)
    assert len(fake_calibration) == 3


def test_quick_comes_from_the_environment(
    fake_calibration: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(auto.QUICK_ENV, "quick")
    auto.auto_profile(1, device="cpu", log=None)
    monkeypatch.setenv(auto.QUICK_ENV, "")
    auto.auto_profile(1, device="cpu", log=None, refresh=True)
    assert [c["quick"] for c in fake_calibration] == [True, False]


def test_cache_folder_follows_env_then_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(auto.CACHE_ENV, str(tmp_path / "a"))
    assert auto.cache_dir() == tmp_path / "a"
    monkeypatch.delenv(auto.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert auto.cache_dir() == tmp_path / "x" / "archsearch" / "hardware"


def test_resolve_profile_sends_only_the_marker_to_calibration(fake_calibration: list[dict[str, Any]]) -> None:
    assert auto.resolve_profile({"name": "auto", "auto": True}, log=None).calibrated
    laptop = auto.resolve_profile(load_hardware("laptop_cpu").to_dict())
    assert laptop.name == "laptop_cpu" and len(fake_calibration) == 1


def test_auto_profile_defaults_are_the_latency_settings_defaults() -> None:
    import inspect

    params = inspect.signature(auto.auto_profile).parameters
    lat = LatencySettings()
    assert (params["threads"].default, params["memory_format"].default, params["clock"].default) == (
        lat.threads,
        lat.memory_format,
        lat.clock,
    )


def test_provenance_labels_datasheet_and_calibrated_profiles() -> None:
    assert "datasheet-only" in load_hardware("laptop_cpu").provenance
    assert "datasheet-only" in load_hardware("a100").provenance
    shipped = load_hardware("this_machine")
    assert shipped.provenance.startswith("calibrated on") and "host vm" in shipped.provenance


def test_calibrate_command_without_out_refreshes_the_auto_entry(
    fake_calibration: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    run(CalibrateConfig(threads=1, device="cpu"))
    assert "stored as the hardware=auto profile" in capsys.readouterr().err
    auto.auto_profile(1, device="cpu", log=None)
    assert len(fake_calibration) == 1  # the command's profile is what auto now reads


def test_device_selection_prefers_cuda_only_when_present(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    # MPS is used only when named: no profile describes it, and auto is also what hardware=auto calibrates.
    assert profile_device("auto").type == "cpu" and latency_device("auto") == "cpu"
    with pytest.raises(ConfigError, match=r"^device is 'cuda' but torch sees no CUDA device here; allowed"):
        profile_device("cuda")
    with pytest.raises(ConfigError, match=r"^device is 'mps'; allowed: auto, cpu, cuda, cuda:N\.$"):
        profile_device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert profile_device("auto").type == "cuda" and latency_device("auto") == "cuda"
    # The CPU clock and ONNX Runtime's CPU provider always measure the CPU.
    assert latency_device("auto", clock="cpu") == "cpu" and profile_device("auto", clock="cpu").type == "cpu"
    assert latency_device("auto", runtime="onnxruntime") == "cpu"
    assert profile_device("cuda", runtime="onnxruntime").type == "cpu"


def test_the_calibration_command_stores_its_profile_under_the_device_it_measured(
    fake_calibration: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *_: "Fake GPU")
    profile = run(CalibrateConfig(threads=1, clock="cpu"))  # device=auto, but a CPU clock: the CPU
    assert profile.extra["auto_key"]["device"] == "cpu" and fake_calibration[0]["device"] == "auto"
    profile = run(CalibrateConfig(threads=1))
    assert profile.extra["auto_key"]["device"] == "cuda:Fake GPU"


def test_quick_real_calibration_is_cached_and_named_auto(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(auto.CACHE_ENV, str(tmp_path))
    profile = auto.auto_profile(1, device="cpu", quick=True, log=None)
    assert profile.name == "auto" and profile.calibrated and profile.overheads_us
    assert auto.cache_path(auto.cache_key(1, "auto", "wall", "cpu")).is_file()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_calibration_times_with_events() -> None:
    from archsearch.hardware.cuda import calibrate_cuda

    profile = calibrate_cuda(torch.device("cuda"), quick=True)
    assert profile.peak_gflops > 0 and profile.overhead_us > 0 and profile.calibrated


def test_the_latency_runtime_has_its_own_calibrated_entry(fake_calibration: list[dict[str, Any]]) -> None:
    auto.auto_profile_for(LatencySettings(runtime="torch"), log=None)
    auto.auto_profile_for(LatencySettings(runtime="onnxruntime"), log=None)
    assert [c["runtime"] for c in fake_calibration] == ["torch", "onnxruntime"]
    assert fake_calibration[1]["device"] == "cpu"  # ONNX Runtime's CPU provider, GPU or not
    assert auto.cache_key(1, "auto", "wall", "cpu", "onnxruntime")["runtime"] == "onnxruntime"
    names = sorted(p.name for p in auto.cache_dir().glob("*.yaml"))
    assert len(names) == 2 and names[0].startswith("cpu-onnxruntime-t1-")
    auto.auto_profile_for(LatencySettings(runtime="onnxruntime"), log=None)
    assert len(fake_calibration) == 2  # reused
