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
from collections.abc import Callable
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from archsearch.cli.errors import run_cli, run_hydra
from archsearch.cli.searchpath import use_user_config_dirs
from archsearch.resources import CONF_DIR


def dispatch(cfg: DictConfig) -> Any:
    """What the CLI does: a sweep if ``cfg.sweep`` is set, else one training run.

    As one of several jobs a Hydra launcher runs side by side, ``trainer.threads: null`` becomes
    the job's share of the cores, so the workers do not oversubscribe the machine.
    """
    from archsearch.cli.launcher import local_parallel_jobs
    from archsearch.search.workers import worker_threads

    parallel = local_parallel_jobs()
    if parallel is not None and cfg.get("trainer") is not None and cfg.trainer.get("threads") is None:
        with open_dict(cfg):
            cfg.trainer.threads = worker_threads(*parallel)
    model_file = cfg.get("model_file")
    if model_file:
        from archsearch.net.spec import load_spec

        spec = load_spec(str(model_file))
        with open_dict(cfg):
            cfg.model = OmegaConf.create(_literal(spec.to_dict()))
    elif isinstance(cfg.get("model"), DictConfig):
        # A net is data: `${oc.env:...}` in a conf/model/ file stays text, never the environment.
        with open_dict(cfg):
            cfg.model = OmegaConf.create(_literal(OmegaConf.to_container(cfg.model, resolve=False)))
    if cfg.get("sweep") is not None:
        return run_sweep(cfg, console=_console())
    from archsearch.cli.train import train

    return train(cfg, console=_console())


def _literal(value: Any) -> Any:
    """``value`` with every ``${`` escaped, so OmegaConf reads its strings as text, not interpolations."""
    if isinstance(value, dict):
        return {k: _literal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_literal(v) for v in value]
    if isinstance(value, str):
        return value.replace("${", "\\${")
    return value


def _console() -> Any:
    from rich.console import Console

    # A pipe or log file gets wide lines rather than tables cut at 80 columns.
    return Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)


def run_sweep(cfg: DictConfig, *, console: Any = None, fit_fn: Callable[..., Any] | None = None) -> Any:
    """``+sweep=NAME``: check every key, then :func:`run_search` (and finalize when asked).

    Args:
        cfg: the composed config (root config plus a ``sweep/`` config).
        console: a ``rich.console.Console`` for progress (quiet if None; the command passes its own).
        fit_fn: replaces the trainer (tests); else ``sweep.fit`` or the real one.
    """
    from rich.console import Console

    from archsearch.cli.config import sweep_plan
    from archsearch.data.datasets import load_dataset

    plan = sweep_plan(cfg)
    data = load_dataset(plan.data, seed=plan.settings.seed)
    console = console or Console(quiet=True)
    fit_fn = fit_fn or plan.fit_fn
    result = plan.search(data, console=console, fit_fn=fit_fn)
    if not plan.finalize:
        return result
    import dataclasses

    from archsearch.cli.finalize import finalize

    export = finalize(cfg, study=result.study, fit_fn=fit_fn, console=console).export
    return dataclasses.replace(result, front=export.front, export_dir=export.directory, files=export.files)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def _entry(cfg: DictConfig) -> None:
    run_cli(lambda: dispatch(cfg))


def main() -> None:
    """``python -m archsearch``: Hydra composes the config; composition errors exit 2."""
    use_user_config_dirs()
    run_hydra(_entry)
