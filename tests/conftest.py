"""Shared fixtures: the shipped reference networks and a seeded generator of random valid specs."""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from archsearch.errors import SpecError
from archsearch.net.spec import NetSpec, load_spec
from archsearch.resources import CONF_DIR

REFERENCE_MODELS = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))


@pytest.fixture(scope="session")
def reference_specs() -> dict[str, NetSpec]:
    """Every network under conf/model/, by file stem."""
    return {name: load_spec(CONF_DIR / "model" / f"{name}.yaml") for name in REFERENCE_MODELS}


def random_spec(seed: int) -> NetSpec:
    """A small random valid network: branching conv/fire/pool/add/concat/dropout body, random head.

    Candidate nodes that make the graph invalid (a map shrunk to nothing, say) are drawn again,
    so every op's fields are exercised over their whole legal range rather than a safe subset.
    """
    rng = random.Random(seed)
    c, h, w = rng.randint(1, 4), rng.randint(6, 18), rng.randint(6, 18)
    num_classes = rng.randint(2, 9)
    nodes: list[dict[str, Any]] = []
    shapes: dict[str, tuple[int, ...]] = {"input": (c, h, w)}

    def extend(candidate: list[dict[str, Any]], head: bool = False) -> bool:
        probe = {"name": "probe", "input": [c, h, w], "num_classes": num_classes}
        # A body node is checked under a throwaway head, since a spec must end in num_classes.
        tail = (
            []
            if head
            else [
                {"name": "_gap", "op": "global_avgpool"},
                {"name": "_fc", "op": "linear", "out": num_classes},
            ]
        )
        try:
            found = NetSpec.from_dict({**probe, "nodes": nodes + candidate + tail}).validate()
        except SpecError:
            return False
        nodes.extend(candidate)
        shapes.update({n["name"]: found[n["name"]] for n in candidate})
        return True

    for i in range(rng.randint(3, 8)):
        for _ in range(50):
            if extend([_random_body_node(rng, f"n{i}", nodes, shapes)]):
                break
    for _ in range(50):
        if extend(_random_head(rng, nodes, shapes), head=True):
            break
    else:  # pragma: no cover - the first head choice always fits
        raise AssertionError(f"seed {seed}: no head fits")
    return NetSpec.from_dict(
        {"name": f"random{seed}", "input": [c, h, w], "num_classes": num_classes, "nodes": nodes}
    )


def _pick_input(rng: random.Random, nodes: list[dict[str, Any]], shapes: dict[str, tuple[int, ...]]) -> str:
    spatial = [n for n, s in shapes.items() if len(s) == 3]
    last = nodes[-1]["name"] if nodes else "input"
    return last if rng.random() < 0.5 else rng.choice(spatial)


def _random_body_node(
    rng: random.Random, name: str, nodes: list[dict[str, Any]], shapes: dict[str, tuple[int, ...]]
) -> dict[str, Any]:
    src = _pick_input(rng, nodes, shapes)
    cin = shapes[src][0]
    node: dict[str, Any] = {"name": name}
    if src != (nodes[-1]["name"] if nodes else "input"):
        node["inputs"] = [src]
    op = rng.choice(["conv", "conv", "fire", "fire", "maxpool", "avgpool", "add", "concat", "dropout"])
    if op == "conv":
        kernel = rng.choice([1, 2, 3, 5])
        groups = rng.choice([g for g in (1, 2, 3, 4) if cin % g == 0])
        node.update(op="conv", out=groups * rng.randint(1, 4), kernel=kernel, groups=groups)
        node.update(stride=rng.choice([1, 1, 2]), dilation=rng.choice([1, 1, 2]))
        if kernel % 2 == 0 or rng.random() < 0.3:
            node["padding"] = rng.randint(0, 2)
        node.update(bias=rng.random() < 0.7, bn=rng.random() < 0.3)
        node["act"] = rng.choice(["relu", "relu6", "gelu", "silu", "none"])
    elif op == "fire":
        kernels = rng.sample([1, 3, 5], rng.randint(1, 3))
        expand = {k: rng.randint(1, 6) for k in kernels}
        node.update(op="fire", squeeze=rng.randint(1, max(1, sum(expand.values()) - 1)), expand=expand)
        node.update(bn=rng.random() < 0.3)
    elif op in ("maxpool", "avgpool"):
        kernel = rng.randint(1, 3)
        node.update(op=op, kernel=kernel, padding=rng.randint(0, kernel // 2), ceil_mode=rng.random() < 0.5)
        if rng.random() < 0.5:
            node["stride"] = rng.randint(1, 3)
    elif op in ("add", "concat"):
        same = [n for n, s in shapes.items() if len(s) == 3 and s[1:] == shapes[src][1:] and n != src]
        if not same:
            return {"name": name, "op": "dropout", "p": 0.1}
        picked = [*rng.sample(same, min(len(same), rng.randint(1, 2))), src]
        node["inputs"] = picked
        node["op"] = op
        if op == "add":
            mismatched = len({shapes[n][0] for n in picked}) > 1
            node["project"] = mismatched or rng.random() < 0.3
    else:
        node.update(op="dropout", p=rng.choice([0.0, 0.2, 0.5]))
    return node


def _random_head(
    rng: random.Random, nodes: list[dict[str, Any]], shapes: dict[str, tuple[int, ...]]
) -> list[dict[str, Any]]:
    last = nodes[-1]["name"] if nodes else "input"
    kind = rng.choice(["conv_gap", "gap_linear", "flatten_mlp", "two_branch"])
    if kind == "conv_gap":
        return [
            {"name": "head", "op": "conv", "out": "num_classes", "kernel": 1, "act": "none"},
            {"name": "gap", "op": "global_avgpool"},
        ]
    if kind == "gap_linear":
        return [
            {"name": "gap", "op": "global_avgpool"},
            {"name": "drop", "op": "dropout", "p": 0.5},
            {"name": "fc", "op": "linear", "out": "num_classes", "bias": rng.random() < 0.8},
        ]
    if kind == "flatten_mlp":
        return [
            {"name": "flat", "op": "flatten"},
            {"name": "fc1", "op": "linear", "out": rng.randint(3, 12), "act": "relu"},
            {"name": "fc2", "op": "linear", "out": "num_classes"},
        ]
    # Two pooled branches, concatenated and summed as flat vectors.
    other = rng.choice([n for n, s in shapes.items() if len(s) == 3])
    return [
        {"name": "gap_a", "op": "global_avgpool", "inputs": [last]},
        {"name": "gap_b", "op": "global_avgpool", "inputs": [other]},
        {"name": "cat", "op": "concat", "inputs": ["gap_a", "gap_b"]},
        {"name": "fc_a", "op": "linear", "out": "num_classes"},
        {"name": "fc_b", "op": "linear", "out": "num_classes", "inputs": ["gap_a"]},
        {"name": "sum", "op": "add", "inputs": ["fc_a", "fc_b"]},
    ]


@pytest.fixture(scope="session")
def make_random_spec() -> Callable[[int], NetSpec]:
    """``make_random_spec(seed)`` -> a small random valid NetSpec (deterministic per seed)."""
    return random_spec


# -- the command line in a subprocess, and the PostgreSQL server CI starts ------------------------

POSTGRES_ENV = "ARCHSEARCH_TEST_POSTGRES"


class ArchsearchCLI:
    """``python -m archsearch ARGS`` (or another module) in a subprocess, with text pipes."""

    def start(self, cwd: Any, *args: str, module: str = "archsearch", interruptible: bool = False) -> Any:
        """Start it in ``cwd``; returns the ``subprocess.Popen``.

        ``interruptible`` restores Ctrl-C to Python's default in the child: a process started
        from a non-interactive shell otherwise inherits SIGINT ignored. (It runs code between
        fork and exec, which is unsafe while other threads start processes: use it alone.)
        """
        import signal
        import subprocess
        import sys

        return subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)) if interruptible else None,
        )

    def run(self, cwd: Any, *args: str, timeout: float = 300, module: str = "archsearch") -> Any:
        """Run it in ``cwd`` to the end; returns a ``subprocess.CompletedProcess``."""
        import subprocess

        proc = self.start(cwd, *args, module=module)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            raise AssertionError(f"archsearch {' '.join(args)} ran over {timeout}s:\n{out}\n{err}") from None
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.fixture(scope="session")
def archsearch_cli() -> ArchsearchCLI:
    """Runs the command line in subprocesses: ``archsearch_cli.run(cwd, "+sweep=fire", ...)``."""
    return ArchsearchCLI()


@pytest.fixture
def postgres_url() -> str:
    """The PostgreSQL URL .ci/run exports; the test is skipped where no server was started."""

    url = os.environ.get(POSTGRES_ENV)
    if not url:
        pytest.skip(f"{POSTGRES_ENV} is not set (.ci/run starts PostgreSQL and sets it)")
    return url


@pytest.fixture(scope="session")
def mlflow_db_template(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Path of an empty MLflow SQLite database with every migration applied, made once per session.

    Creating one costs seconds of schema migrations; a test copies it to ``DIR/mlruns/mlflow.db``
    (``tracking.dir=DIR/mlruns``) to start its processes on a ready backend.
    """
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("mlflow_template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def one_thread() -> Iterator[int]:
    """One torch thread for the test, restored afterwards: tiny models run far faster so here."""
    from archsearch.hardware.runtime import torch_threads

    with torch_threads(1) as threads:
        yield threads


# --------------------------------------------------------------------------- hardware=auto cache

_saved_env: dict[str, str | None] = {}
_auto_cache: list[str] = []


def pytest_configure(config: Any) -> None:
    """Keep the session (and every subprocess it starts) away from the user's caches.

    The cache is a fresh temporary folder and a missing profile is calibrated quickly (~2 s, once
    per session), so no test depends on, or writes to, a calibration made before it.
    """
    import tempfile

    from archsearch.hardware.cache import CACHE_ENV, QUICK_ENV

    folder = tempfile.mkdtemp(prefix="archsearch-hardware-")
    _auto_cache.append(folder)
    user_cache = tempfile.mkdtemp(prefix="archsearch-cache-")
    _auto_cache.append(user_cache)
    # Every per-user cache (decoded images, the empty MLflow store) too.
    for name, value in ((CACHE_ENV, folder), (QUICK_ENV, "quick"), ("XDG_CACHE_HOME", user_cache)):
        _saved_env[name] = os.environ.get(name)
        os.environ[name] = value


def pytest_unconfigure(config: Any) -> None:
    """Put the environment back and delete the session's cache."""
    import shutil

    for name, value in _saved_env.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    for folder in _auto_cache:
        shutil.rmtree(folder, ignore_errors=True)
