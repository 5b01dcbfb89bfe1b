"""``python -m archsearch.calibrate``: time this host's kernels and write a hardware profile."""

from __future__ import annotations

import sys
from dataclasses import fields
from typing import Any

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from archsearch.cli.errors import run_cli
from archsearch.hardware.calibrate import CalibrateConfig, run

# Hydra must not write .hydra/, outputs/ or logs for a command whose only output is `out`.
_HYDRA_NODE: dict[str, Any] = {
    "defaults": [
        {"override hydra/job_logging": "none"},
        {"override hydra/hydra_logging": "none"},
        "_self_",
    ],
    "hydra": {
        "output_subdir": None,
        "run": {"dir": "."},
        "job": {"chdir": False},
        "help": {
            "app_name": "archsearch.calibrate",
            "header": (
                "python -m archsearch.calibrate: time this host's kernels and write a hardware profile\n"
                "(what latency_est_ms prices kernels with; hardware=auto does this once and caches).\n\n"
                "Usage:\n  python -m archsearch.calibrate [out=conf/hardware/NAME.yaml] [quick=true] "
                "[key=value ...]"
            ),
            "footer": "Every key above is overridable as key=value. README.md documents each command.",
            "template": "${hydra.help.header}\n\n== Keys of this command, with their defaults ==\n$CONFIG\n"
            "${hydra.help.footer}",
        },
    },
    **{f.name: f.default for f in fields(CalibrateConfig)},
}


def main() -> None:
    """Entry point: Hydra-style ``key=value`` overrides of :class:`CalibrateConfig`."""
    allowed = {f.name for f in fields(CalibrateConfig)}
    # Hydra would reject an unknown key with its own multi-line message and exit 1.
    unknown = [
        arg.split("=", 1)[0].lstrip("+~")
        for arg in sys.argv[1:]
        if "=" in arg and not arg.lstrip("+~").startswith("hydra.")
    ]
    unknown = [key for key in unknown if key not in allowed]
    if unknown:
        run_cli(lambda: CalibrateConfig.from_mapping({unknown[0]: None}))
    ConfigStore.instance().store(name="calibrate", node=_HYDRA_NODE)

    @hydra.main(version_base="1.3", config_path=None, config_name="calibrate")
    def _entry(cfg: DictConfig) -> None:
        raw = OmegaConf.to_container(cfg, resolve=True)
        assert isinstance(raw, dict)
        run_cli(lambda: run(CalibrateConfig.from_mapping({str(k): v for k, v in raw.items()})))

    _entry()
