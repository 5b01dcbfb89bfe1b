"""A config file cannot run code: ``_target_`` allow-lists, the user's own classes by environment only."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from archsearch.errors import ConfigError
from archsearch.targets import ALLOW_ENV, check_target, check_user_configs

SWEEP = ("+sweep=fire", "data=synthetic", "export.plots=false", "study.n_trials=1", "tracking.enabled=false")
WRITE_TEXT = "_target_: pathlib.Path.write_text\nself: {path}\ndata: owned\n"


def test_each_key_takes_its_own_modules_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ALLOW_ENV, raising=False)
    check_target("sampler", "optuna.samplers.TPESampler")
    check_target("sampler", "archsearch.search.cost_aware.CostAwareSampler")
    check_target("trainer.optimizer", "torch.optim.SGD")
    for key, target in (
        ("sampler", "pathlib.Path.write_text"),
        ("sampler", "optuna.samplersX.Evil"),  # a prefix is a module, not a string start
        ("trainer.optimizer", "optuna.samplers.TPESampler"),
        ("sweep.fit", "os.system"),
        ("hydra.callbacks", "subprocess.run"),
    ):
        with pytest.raises(ConfigError, match=f"{key}._target_ '{target}' is not allowed"):
            check_target(key, target)
    monkeypatch.setenv(ALLOW_ENV, "mypkg.samplers, other")
    check_target("sampler", "mypkg.samplers.Mine")
    check_target("trainer.optimizer", "other.Lion")


def test_user_config_files_are_checked_by_where_the_target_sits(tmp_path: Path) -> None:
    (tmp_path / "trainer").mkdir()
    (tmp_path / "trainer" / "mine.yaml").write_text("optimizer:\n  _target_: torch.optim.SGD\n  lr: 0.1\n")
    (tmp_path / "sampler").mkdir()
    (tmp_path / "sampler" / "ok.yaml").write_text("_target_: optuna.samplers.RandomSampler\n")
    (tmp_path / "broken.yaml").write_text("{ not yaml")  # Hydra reports it, not this check
    check_user_configs([tmp_path])
    (tmp_path / "trainer" / "bad.yaml").write_text("optimizer:\n  _target_: builtins.eval\n")
    with pytest.raises(ConfigError, match=r"trainer\.optimizer\._target_ 'builtins.eval' in .*bad.yaml"):
        check_user_configs([tmp_path])


def _project(tmp_path: Path, relative: str, text: str) -> Path:
    path = tmp_path / "archsearch_conf" / relative
    path.parent.mkdir(parents=True)
    path.write_text(text)
    return tmp_path


@pytest.mark.parametrize(
    ("relative", "text", "key"),
    [
        ("sampler/tpe.yaml", WRITE_TEXT, "sampler"),
        (
            "sampler/tpe.yaml",
            "# @package _global_\nhydra:\n  callbacks:\n    x:\n      "
            + WRITE_TEXT.replace("\n", "\n      ").rstrip(),
            "hydra.callbacks",
        ),
    ],
    ids=["sampler", "hydra-callback"],
)
def test_a_cloned_repositorys_config_cannot_write_a_file(
    tmp_path: Path, archsearch_cli: Any, relative: str, text: str, key: str
) -> None:
    """The issue's exploit: ./archsearch_conf in the working directory is read automatically."""
    victim = tmp_path / "owned.txt"
    cwd = _project(tmp_path, relative, text.format(path=victim))
    env_free = os.environ.pop(ALLOW_ENV, None)
    try:
        done = archsearch_cli.run(cwd, *SWEEP, "sampler=tpe", timeout=120)
    finally:
        if env_free is not None:
            os.environ[ALLOW_ENV] = env_free
    assert done.returncode == 2, done.stderr[-2000:]
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("error:")]
    assert f"{key}._target_ 'pathlib.Path.write_text' in {cwd / 'archsearch_conf' / relative}" in line
    assert ALLOW_ENV in line and "Traceback" not in done.stderr
    assert not victim.exists() and sorted(p.name for p in cwd.iterdir()) == ["archsearch_conf"]


def test_the_users_own_sampler_works_when_the_environment_allows_it(tmp_path: Path) -> None:
    """A sampler class of the user's, named in ./archsearch_conf and allowed by ARCHSEARCH_ALLOW_TARGETS;
    the folders read are said on stderr."""
    import subprocess
    import sys

    (tmp_path / "my_samplers.py").write_text(
        "import optuna\n\nclass Mine(optuna.samplers.RandomSampler):\n    pass\n"
    )
    cwd = _project(tmp_path, "sampler/mine.yaml", "_target_: my_samplers.Mine\nseed: null\n")
    args = [sys.executable, "-m", "archsearch", *SWEEP, "sampler=mine", "trainer.epochs=1"]
    refused = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)
    assert refused.returncode == 2 and "my_samplers.Mine" in refused.stderr
    env = {**os.environ, ALLOW_ENV: "my_samplers"}
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300, check=False, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "config folders read before the packaged ones: ./archsearch_conf" in done.stderr


def test_the_trainer_stand_in_comes_from_archsearch_only(tmp_path: Path, archsearch_cli: Any) -> None:
    refused = archsearch_cli.run(tmp_path, *SWEEP, "+sweep.fit._target_=os.system", "+sweep.fit.command=true")
    assert refused.returncode == 2 and "sweep.fit._target_ 'os.system' is not allowed" in refused.stderr
    done = archsearch_cli.run(
        tmp_path, *SWEEP, "+sweep.fit._target_=archsearch.testing.FixedCostFit", "+sweep.fit.seconds=0"
    )
    assert done.returncode == 0, done.stderr[-2000:]
