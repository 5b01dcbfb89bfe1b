"""``python -m archsearch``: train one ``model=`` or, with ``+sweep=NAME``, run a search.

Examples:
    python -m archsearch                                   # train fire_digits on digits
    python -m archsearch model=fire_mnist data=fashion_mnist trainer.epochs=2
    python -m archsearch model_file=results/fire/nets/trial_0007_ab12cd34ef56.yaml
    python -m archsearch +sweep=fire                       # the search (see README)
    python -m archsearch +sweep=fire +workers=local workers.n=4 study.storage=postgresql://...
                                                           # 4 local workers on one study
"""

from __future__ import annotations

import sys
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from archsearch.cli.errors import run_cli, run_hydra
from archsearch.cli.searchpath import use_user_config_dirs
from archsearch.resources import CONF_DIR


def dispatch(cfg: DictConfig) -> Any:
    """What the CLI does, as a plain function: a sweep if ``cfg.sweep`` is set, else one training run.

    As one of several jobs a Hydra launcher runs side by side, ``trainer.threads: null`` becomes
    the job's share of the cores, so the workers do not oversubscribe the machine.
    """
    from archsearch.search.workers import local_parallel_jobs, worker_threads

    parallel = local_parallel_jobs()
    if parallel is not None and cfg.get("trainer") is not None and cfg.trainer.get("threads") is None:
        with open_dict(cfg):
            cfg.trainer.threads = worker_threads(*parallel)
    model_file = cfg.get("model_file")
    if model_file:
        from archsearch.net.spec import load_spec

        spec = load_spec(str(model_file))
        with open_dict(cfg):
            cfg.model = OmegaConf.create(spec.to_dict())
    if cfg.get("sweep") is not None:
        from rich.console import Console

        from archsearch.search.sweep import run_sweep

        # A pipe or log file gets wide lines rather than tables cut at 80 columns.
        wide = None if sys.stdout.isatty() else 160
        return run_sweep(cfg, console=Console(soft_wrap=True, width=wide))
    from archsearch.train.single import train_single

    return train_single(cfg)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def _entry(cfg: DictConfig) -> None:
    run_cli(lambda: dispatch(cfg))


def main() -> None:
    """``python -m archsearch``: Hydra composes the config; composition errors exit 2."""
    use_user_config_dirs()
    run_hydra(_entry)
