"""The supernet fidelity in a search: one worker trains the study's supernet, every worker scores on it.

With ``sweep.fidelity.kind=supernet`` a trial does not train its network: it is scored on the
study's weight-sharing supernet (:mod:`archsearch.supernet`) in about a second. The supernet is
trained once per study, before the first trial:

- The first worker to find the study without one claims it (study user attr ``supernet``,
  written under the storage lock), trains it, beats a heartbeat into the claim every
  ``study.heartbeat_interval`` seconds, writes a checkpoint every epoch (a file under
  ``tracking.dir/supernet/`` and an artifact of the study's MLflow parent run), and marks the
  claim ``ready``.
- Other workers wait for ``ready`` and then load the checkpoint. A claim whose heartbeat is older
  than ``study.grace_period`` belongs to a dead worker: a waiting worker takes it over and
  resumes the training from the last checkpoint, as a restarted search does.

Costs still come from ``analyze`` of each candidate's own spec; only ``val_acc`` comes from the
supernet, and the trial records ``fidelity: supernet`` so the export can say so.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna

from archsearch.errors import ConfigError
from archsearch.net.cost import analyze

if TYPE_CHECKING:
    from archsearch.data.base import DatasetLike
    from archsearch.hardware.profile import HardwareProfile
    from archsearch.net.spec import NetSpec
    from archsearch.results.tracking import TrialTracker
    from archsearch.search.settings import SearchSettings
    from archsearch.search.space_core import SearchSpace
    from archsearch.storage.database import StorageLock

__all__ = [
    "SUPERNET_ATTR",
    "SupernetFidelity",
    "checkpoint_path",
    "inherited_weights",
    "supernet_fingerprint",
]

#: The study user attr holding the supernet's claim: state, owner, heartbeat, checkpoint, fingerprint.
SUPERNET_ATTR = "supernet"


def supernet_fingerprint(settings: SearchSettings, space: SearchSpace, data: DatasetLike) -> str:
    """16 hex digits of what a supernet was trained for: the space, the data, the cost bounds,
    the supernet and trainer settings that change its weights, and the seed (not threads or device)."""
    trainer = {
        k: v for k, v in settings.trainer.to_mapping().items() if k not in ("threads", "device", "epochs")
    }
    labels = data.train_y
    body = {
        "space": space.hash,
        "data": [list(data.shape), int(data.num_classes), len(labels), int(labels[:4096].sum())],
        "constraints": [[c.metric, c.max, c.min] for c in settings.constraints],
        "cost": [settings.cost.batch_size, settings.cost.bytes_per_element],
        "supernet": settings.fidelity.to_mapping()["supernet"],
        "trainer": trainer,
        "seed": settings.seed,
    }
    canon = json.dumps(body, sort_keys=True, default=str)
    return hashlib.sha256(canon.encode()).hexdigest()[:16]


def checkpoint_path(settings: SearchSettings, fingerprint: str) -> Path:
    """Where the study's supernet checkpoint lives: ``<tracking.dir>/supernet/<study>-<fingerprint>.pt``."""
    return settings.tracking.dir.resolve() / "supernet" / f"{settings.study.name}-{fingerprint}.pt"


class SupernetFidelity:
    """Measures a trial's accuracy on the study's supernet; call :meth:`prepare` once per worker first.

    Args:
        settings: the search settings (``fidelity.supernet``, trainer, constraints, study).
        space: the space searched (its corners size the banks).
        data: the dataset the supernet trains and scores on.
        hardware: the profile ``latency_est_ms`` constraints are checked on.
        log: prints one line of progress.

    Raises:
        ConfigError: the space cannot be shared (at construction: before anything is written).
    """

    def __init__(
        self,
        settings: SearchSettings,
        space: SearchSpace,
        data: DatasetLike,
        hardware: HardwareProfile,
        log: Callable[[str], None] = print,
    ) -> None:
        from archsearch.search.supernet_space import corner_specs
        from archsearch.supernet.plan import plan_banks

        self.settings = settings
        self.space = space
        self.data = data
        self.hardware = hardware
        self.log = log
        self.corners = corner_specs(space, data.shape, data.num_classes, seed=settings.seed)
        self.plan = plan_banks(self.corners)
        self.fingerprint = supernet_fingerprint(settings, space, data)
        self.checkpoint = checkpoint_path(settings, self.fingerprint)
        self.scorer: Any = None
        self._beat = 0.0

    @classmethod
    def for_search(
        cls,
        settings: SearchSettings,
        space: SearchSpace,
        data: DatasetLike,
        hardware: HardwareProfile,
        log: Callable[[str], None] = print,
    ) -> SupernetFidelity | None:
        """The fidelity a search with ``settings`` needs: None unless ``sweep.fidelity.kind`` is supernet."""
        return cls(settings, space, data, hardware, log) if settings.fidelity.kind == "supernet" else None

    # -- which networks the supernet trains ---------------------------------------------------

    def feasible_macs(self, spec: NetSpec) -> float | None:
        """A network's MACs if it meets every cost constraint of the study, else None."""
        report = analyze(
            spec,
            self.hardware,
            batch_size=self.settings.cost.batch_size,
            bytes_per_element=self.settings.cost.bytes_per_element,
        )
        metrics = report.metrics()
        for c in self.settings.constraints:
            if c.metric in metrics and c.violation(metrics[c.metric]) > 0:
                return None
        return float(report.macs)

    # -- train, or wait, then load ------------------------------------------------------------

    def prepare(self, study: optuna.Study, lock: StorageLock, tracker: TrialTracker, parent_run: str) -> None:
        """Make the supernet ready here: train or resume it, or wait for the worker that does; load it."""
        me = f"{socket.gethostname()}:{os.getpid()}"
        waited = False
        while True:
            with lock:
                claim = study.user_attrs.get(SUPERNET_ATTR)
                if claim is not None and claim.get("fingerprint") != self.fingerprint:
                    raise ConfigError(
                        f"study {self.settings.study.name!r} has a supernet trained for another space, data "
                        "or settings; use another study.name."
                    )
                if claim is not None and claim.get("state") == "ready":
                    break
                stale = (
                    claim is None
                    or time.time() - float(claim.get("heartbeat", 0)) > self.settings.study.grace_period
                )
                if stale:
                    if claim is not None:
                        self.log(f"supernet: worker {claim.get('owner')} stopped; resuming its training here")
                    self._claim(study, "training", me)
            if stale:
                self._train(study, tracker, parent_run, me)
                break
            if not waited and claim is not None:
                self.log(f"supernet: waiting for worker {claim.get('owner')} to finish training it")
                waited = True
            time.sleep(min(2.0, self.settings.study.heartbeat_interval))
        self._load()

    def _claim(self, study: optuna.Study, state: str, owner: str, **extra: Any) -> None:
        study.set_user_attr(
            SUPERNET_ATTR,
            {
                "state": state,
                "owner": owner,
                "heartbeat": time.time(),
                "fingerprint": self.fingerprint,
                "checkpoint": str(self.checkpoint),
                **extra,
            },
        )

    def _train(self, study: optuna.Study, tracker: TrialTracker, parent_run: str, me: str) -> None:
        from archsearch.search.supernet_space import draw_pool
        from archsearch.supernet.training import train_supernet

        sn = self.settings.fidelity.supernet
        pool = draw_pool(
            self.space,
            self.data.shape,
            self.data.num_classes,
            self.feasible_macs,
            size=sn.pool,
            extra=self.corners,
            seed=self.settings.seed,
        )
        self.log(
            f"supernet: {len(self.plan.banks)} banks, {len(pool.specs)} feasible networks of "
            f"{pool.macs[0] / 1e6:.2f}-{pool.macs[-1] / 1e6:.2f} MMACs; training {sn.epochs} epochs "
            f"(checkpoint {self.checkpoint})"
        )
        started = time.perf_counter()

        def beat() -> None:
            now = time.time()
            if now - self._beat >= self.settings.study.heartbeat_interval:
                self._beat = now
                self._claim(study, "training", me)

        def epoch_done(epoch: int, record: dict[str, float]) -> None:
            loss, seconds = record["train_loss"], record["seconds"]
            self.log(f"supernet epoch {epoch}/{sn.epochs}: loss {loss:.3f}, {seconds:.1f} s")
            tracker.log_metrics(parent_run, {"supernet_train_loss": record["train_loss"]}, step=epoch)
            tracker.log_artifact(parent_run, self.checkpoint, "supernet")

        run = train_supernet(
            self.plan,
            pool,
            self.data,
            self.settings.trainer,
            sn,
            seed=self.settings.seed,
            checkpoint=self.checkpoint,
            fingerprint=self.fingerprint,
            on_epoch_end=epoch_done,
            on_step=beat,
        )
        if run.resumed_from:
            self.log(f"supernet: resumed after epoch {run.resumed_from} of an earlier training")
        seconds = time.perf_counter() - started
        self._claim(study, "ready", me, epochs=len(run.history), seconds=round(seconds, 1))
        tracker.log_metrics(parent_run, {"supernet_train_seconds": seconds})

    def _load(self) -> None:
        from archsearch.hardware.runtime import torch_threads
        from archsearch.supernet.scoring import Scorer
        from archsearch.supernet.training import load_supernet
        from archsearch.train.device import resolve_device

        supernet = load_supernet(self.checkpoint, self.fingerprint)
        if supernet is None:
            raise ConfigError(
                f"supernet checkpoint {self.checkpoint} is missing; workers of a supernet study must share "
                "tracking.dir (or copy the file from the MLflow parent run's supernet/ artifacts there)."
            )
        trainer = self.settings.trainer
        with torch_threads(trainer.threads):
            supernet.to(resolve_device(trainer.device))
            sn = self.settings.fidelity.supernet
            self.scorer = Scorer(
                supernet,
                self.data,
                batch_size=trainer.batch_size,
                bn_batches=sn.bn_batches,
                eval_images=sn.eval_images,
                eval_batch_size=trainer.eval_batch_size,
                seed=self.settings.seed,
            )

    # -- a trial ------------------------------------------------------------------------------

    def __call__(self, spec: NetSpec) -> dict[str, Any]:
        """A trial's results (user attrs) from the supernet: its validation accuracy and the time it took."""
        from archsearch.hardware.runtime import torch_threads

        if self.scorer is None:
            raise RuntimeError("SupernetFidelity.prepare must run before a trial is scored")
        started = time.perf_counter()
        with torch_threads(self.settings.trainer.threads):
            acc = float(self.scorer(spec))
        return {
            "val_acc": acc,
            "val_acc_best": acc,
            "epochs_done": 0.0,
            "train_seconds": time.perf_counter() - started,
            "fidelity": "supernet",
        }


def inherited_weights(
    study: optuna.Study, tracking_dir: Path | None = None
) -> Callable[[NetSpec, Any], None]:
    """What loads a network's slice of the study's trained supernet into its freshly built module
    (``finalize.init=supernet``).

    Args:
        study: the searched study; its supernet claim names the checkpoint, absolute.
        tracking_dir: the project's tracking directory now (``tracking.dir``). When the project
            moved or was copied, the claim names the old place; the checkpoint is then read from
            ``<tracking_dir>/supernet/`` (where :func:`checkpoint_path` put it).

    Raises:
        ConfigError: the study has no trained supernet, or its checkpoint file is gone.
    """
    from archsearch.supernet.training import load_supernet

    claim = study.user_attrs.get(SUPERNET_ATTR) or {}
    if claim.get("state") != "ready":
        raise ConfigError(
            f"finalize.init=supernet needs a study searched with sweep.fidelity.kind=supernet; "
            f"study {study.study_name!r} has no trained supernet."
        )
    path = Path(str(claim["checkpoint"]))
    moved = None if tracking_dir is None else Path(tracking_dir).resolve() / "supernet" / path.name
    if not path.is_file() and moved is not None and moved.is_file():
        path = moved
    supernet = load_supernet(path, str(claim["fingerprint"]))
    if supernet is None:
        where = "" if moved is None or moved == path else f" (nor is {moved})"
        raise ConfigError(
            f"finalize.init=supernet: the study's supernet checkpoint {path} is missing{where}."
        )
    return supernet.load_into
