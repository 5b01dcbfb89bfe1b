"""``python -m archsearch`` without a sweep: one ``model=`` (or ``model_file=``) trained and printed."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

__all__ = ["train"]


def train(cfg: DictConfig, *, console: Any = None) -> Any:
    """No sweep: train ``model`` (or ``model_file``) on ``data`` with ``trainer`` and print it."""
    from rich.console import Console

    from archsearch.cli.config import plain, trainer_settings
    from archsearch.data.datasets import DataSettings, load_dataset
    from archsearch.hardware.auto import auto_profile_for, is_auto, resolve_profile
    from archsearch.net.spec import NetSpec
    from archsearch.search.settings import CostSettings, LatencySettings
    from archsearch.train.single import train_single

    raw = plain(cfg)
    trainer = trainer_settings(cfg)
    cost = CostSettings.from_mapping(raw.get("cost"))
    hw_raw = raw.get("hardware") or {}
    hardware = None if is_auto(hw_raw) or not hw_raw else resolve_profile(hw_raw)
    model = raw.get("model") or {}
    declared = NetSpec.from_dict(model, source=f"model {model.get('name', '')}")
    seed = raw.get("seed", 0)
    data = load_dataset(DataSettings.from_mapping(raw.get("data")), seed=seed)
    if is_auto(hw_raw):
        # After every check: no sweep, so no latency block; calibrated for latency's defaults.
        hardware = auto_profile_for(LatencySettings())
    return train_single(
        declared,
        data,
        trainer,
        seed=seed,
        hardware=hardware,
        cost_batch_size=cost.batch_size,
        bytes_per_element=cost.bytes_per_element,
        console=console or Console(quiet=True),
    )
