"""Weight sharing: slices compute what stand-alone networks compute, banks fit every candidate,
recalibration touches only batch-norm statistics, training resumes, workers share one supernet."""

from __future__ import annotations

import random
import re
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import torch
from torch import nn

import archsearch as A
from archsearch.errors import ConfigError
from archsearch.net.cost import analyze
from archsearch.net.model import build
from archsearch.results.tracking import NullTracker
from archsearch.search.fidelity import FidelitySettings
from archsearch.search.space import load_space, space_from_dict
from archsearch.search.supernet_fidelity import SUPERNET_ATTR, SupernetFidelity, inherited_weights
from archsearch.search.supernet_space import PolicyTrial, corner_specs, draw_pool, random_value
from archsearch.storage.database import StorageLock
from archsearch.supernet.network import Supernet, SupernetMismatch
from archsearch.supernet.plan import BankPlan, plan_banks
from archsearch.supernet.scoring import Scorer, recalibrate
from archsearch.supernet.settings import SupernetSettings
from archsearch.supernet.slots import Unshareable, candidate_slots
from archsearch.supernet.training import train_supernet
from archsearch.testing import FixedCostFit
from tests.conftest import random_spec

SHAPES = {"fire": (1, 8, 8), "fire_per_module": (1, 8, 8), "fire_stages_graph": (1, 28, 28)}


def _draws(space: Any, shape: tuple[int, ...], n: int, seed: int = 0) -> list[Any]:
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        try:
            out.append(space.sample(PolicyTrial(lambda _n, d: random_value(rng, d)), shape, 10))
        except A.InfeasibleArchitecture:
            continue
    return out


def _data(n: int = 320, shape: tuple[int, ...] = (1, 8, 8)) -> Any:
    rng = np.random.default_rng(0)
    y = (np.arange(n) % 4).astype("int64")
    x = rng.normal(size=(n, *shape)).astype("float32") + y[:, None, None, None].astype("float32")
    return A.dataset_from_arrays("mine", x, y, test_x=x[:40], test_y=y[:40])


@pytest.fixture(scope="module")
def fire_plan() -> Any:
    return plan_banks(corner_specs(load_space("fire"), (1, 8, 8), 10))


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_every_random_draw_fits_the_banks_found_at_the_corners(name: str) -> None:
    space = load_space(name)
    plan = plan_banks(corner_specs(space, SHAPES[name], 10))
    for spec in _draws(space, SHAPES[name], 300):
        assert plan.fits(candidate_slots(spec)) is None, spec.hash


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_a_slice_computes_what_the_stand_alone_network_computes_with_its_weights(name: str) -> None:
    space = load_space(name)
    shape = SHAPES[name]
    supernet = Supernet(plan_banks(corner_specs(space, shape, 10)), seed=3)
    x = torch.randn(3, *shape)
    for spec in _draws(space, shape, 25, seed=1):
        candidate = supernet.candidate(spec)
        alone = build(spec)
        supernet.load_into(spec, alone)
        for mode in (False, True):  # eval: running statistics; train: batch statistics
            alone.train(mode)
            candidate.module.train(mode)
            torch.manual_seed(0)
            want = alone(x)
            torch.manual_seed(0)
            got = supernet.run(candidate, x)
            assert torch.allclose(got, want, atol=1e-5), (spec.hash, mode)


def test_arbitrary_graphs_slice_exactly_or_are_refused_by_name() -> None:
    checked = 0
    for seed in range(60):
        spec = random_spec(seed)
        try:
            supernet = Supernet(plan_banks([spec]))
        except Unshareable as exc:
            assert "grouped conv" in str(exc) and str(exc).startswith("node ")
            continue
        alone = build(spec).eval()
        supernet.load_into(spec, alone)
        candidate = supernet.candidate(spec)
        candidate.module.eval()
        x = torch.randn(2, *spec.input)
        assert torch.allclose(supernet.run(candidate, x), alone(x), atol=1e-5)
        checked += 1
    assert checked >= 30


def test_kernel_mix_segments_keep_each_kernels_channels_apart(fire_plan: Any) -> None:
    # fire3's squeeze reads fire2's 1x1 then 3x3 channels: its input weights are gathered per
    # bank, so the 3x3 channels meet the same weights whatever the 1x1 share is.
    space = load_space("fire")
    supernet = Supernet(fire_plan)
    base = {
        "depth": 2,
        "base_e": 32,
        "incr_e": 0,
        "freq": 2,
        "sr": 0.25,
        "pct5x5": 0.0,
        "stem_width": 16,
        "stem_kernel": 3,
        "pools": 2,
        "pool_layout": "even",
        "bypass": "none",
        "dropout": 0.0,
    }
    a = space.sample(optuna.trial.FixedTrial({**base, "pct3x3": 0.25}), (1, 8, 8), 10)
    b = space.sample(optuna.trial.FixedTrial({**base, "pct3x3": 0.5}), (1, 8, 8), 10)
    wa = supernet.parameters_of(supernet.slots(a))["ops.fire3.squeeze.0.weight"]
    wb = supernet.parameters_of(supernet.slots(b))["ops.fire3.squeeze.0.weight"]
    # a: 24 1x1 + 8 3x3 channels; b: 16 + 16. The 3x3 channels' weights agree.
    assert torch.equal(wa[:, 24:32], wb[:, 16:24])
    assert torch.equal(wa[:, :16], wb[:, :16])


def test_a_network_wider_than_the_plan_is_refused(fire_plan: Any) -> None:
    wide = NetSpecFromFire(256)
    with pytest.raises(SupernetMismatch, match="does not fit the supernet"):
        Supernet(fire_plan).candidate(wide)


def NetSpecFromFire(width: int) -> Any:
    return A.NetSpec.from_dict(
        {
            "name": "wide",
            "input": [1, 8, 8],
            "num_classes": 10,
            "nodes": [
                {"name": "conv1", "op": "conv", "out": width, "kernel": 3, "bn": True},
                {"name": "conv4", "op": "conv", "out": "num_classes", "kernel": 1, "act": "none"},
                {"name": "gap", "op": "global_avgpool"},
            ],
        }
    )


def test_recalibration_changes_batch_norm_statistics_only_and_exactly() -> None:
    spec = _draws(load_space("fire"), (1, 8, 8), 1)[0]
    module = build(spec)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    batches = [torch.randn(16, 1, 8, 8) + i for i in range(3)]
    recalibrate(module, batches)
    after = module.state_dict()
    first_bn = next(m for m in module.modules() if isinstance(m, nn.BatchNorm2d))
    for key, value in after.items():
        if key.endswith(("running_mean", "running_var", "num_batches_tracked")):
            assert not torch.equal(value, before[key]), key
        else:
            assert torch.equal(value, before[key]), key
    # The first batch norm sees the stem conv's output: its mean is the batches' average.
    stem = module.ops["conv1"][0]
    means = torch.stack([stem(b).mean(dim=(0, 2, 3)) for b in batches]).mean(0)
    assert torch.allclose(first_bn.running_mean, means, atol=1e-5)
    assert first_bn.momentum == 0.1 and module.training


def test_a_killed_training_resumes_where_it_stopped_and_ends_as_an_unbroken_one(tmp_path: Path) -> None:
    space = load_space("fire")
    data = _data()
    corners = corner_specs(space, data.shape, data.num_classes)
    plan = plan_banks(corners)
    pool = draw_pool(space, data.shape, data.num_classes, lambda s: float(analyze(s).macs), size=50, seed=0)
    trainer = A.TrainerSettings(batch_size=32, threads=1)
    settings = SupernetSettings(epochs=2, random_per_step=1)
    whole = train_supernet(plan, pool, data, trainer, settings, seed=0)

    class Killed(Exception):
        pass

    def kill(epoch: int, _record: dict[str, float]) -> None:
        if epoch == 1:
            raise Killed

    ckpt = tmp_path / "sn.pt"
    with pytest.raises(Killed):
        train_supernet(
            plan, pool, data, trainer, settings, seed=0, checkpoint=ckpt, fingerprint="f", on_epoch_end=kill
        )
    resumed = train_supernet(plan, pool, data, trainer, settings, seed=0, checkpoint=ckpt, fingerprint="f")
    assert resumed.resumed_from == 1 and len(resumed.history) == 2
    for key, value in whole.supernet.state_dict().items():
        assert torch.allclose(resumed.supernet.state_dict()[key], value, atol=1e-6), key
    with pytest.raises(ConfigError, match="another space, data or settings"):
        train_supernet(plan, pool, data, trainer, settings, checkpoint=ckpt, fingerprint="other")


def test_unshareable_spaces_are_one_sentence_naming_the_parameter() -> None:
    raw = {
        "input": [1, 8, 8],
        "num_classes": 10,
        "params": {"act": {"categorical": ["relu", "gelu"]}},
        "nodes": [
            {"name": "conv1", "op": "conv", "out": 16, "kernel": 3, "act": "$act"},
            {"name": "head", "op": "conv", "out": "num_classes", "kernel": 1, "act": "none"},
            {"name": "gap", "op": "global_avgpool"},
        ],
    }
    with pytest.raises(ConfigError) as err:
        corner_specs(space_from_dict(raw, name="acts"), (1, 8, 8), 10)
    message = str(err.value)
    assert "parameter 'act'" in message and "node 'conv1'" in message and "kind=epochs" in message
    assert message.count(". ") == 0 and message.endswith(".")


def test_fidelity_settings_check_the_kind_and_refuse_halving_beside_a_supernet() -> None:
    with pytest.raises(ConfigError, match=r"sweep\.fidelity\.kind is 'weights'; allowed: epochs, supernet"):
        FidelitySettings(kind="weights")
    with pytest.raises(ConfigError, match=r"set sweep\.fidelity\.enabled=false"):
        FidelitySettings(kind="supernet", enabled=True)
    with pytest.raises(ConfigError, match=r"sweep\.fidelity\.supernet has unknown key"):
        FidelitySettings.from_mapping({"kind": "supernet", "supernet": {"epoch": 3}})
    read = FidelitySettings.from_mapping({"kind": "supernet", "supernet": {"epochs": 3, "eval_images": None}})
    assert read.supernet == SupernetSettings(epochs=3, eval_images=None)
    assert FidelitySettings.from_mapping(read.to_mapping()) == read


def _settings(tmp: Path, name: str, n: int, **study: Any) -> Any:
    return A.SearchSettings(
        study=A.StudySettings(name=name, n_trials=n, **study),
        trainer=A.TrainerSettings(epochs=2, batch_size=32, threads=1),
        tracking=A.TrackingSettings(dir=tmp / "mlruns"),
        export=A.ExportSettings(dir=tmp / "results", plots=False),
        constraints=(A.Constraint("params", max=20_000),),
        fidelity=FidelitySettings(
            kind="supernet", supernet=SupernetSettings(epochs=1, pool=60, bn_batches=2)
        ),
    )


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any, Path]:
    tmp = tmp_path_factory.mktemp("supernet_search")
    data = _data()
    result = A.run_search(
        load_space("fire"),
        data,
        _settings(tmp, "sn", 12),
        sampler=optuna.samplers.RandomSampler(seed=0),
        hardware=A.load_hardware("laptop_cpu"),
    )
    return result, data, tmp


def test_every_scored_trial_is_costed_from_its_own_spec_and_says_its_fidelity(searched: Any) -> None:
    result, _, _ = searched
    complete = [t for t in result.study.trials if t.user_attrs.get("state") == "complete"]
    assert len(complete) >= 6
    hw = A.load_hardware("laptop_cpu")
    for t in complete:
        spec = A.NetSpec.from_dict(t.user_attrs["spec"])
        assert t.user_attrs["costs"] == pytest.approx(analyze(spec, hw).metrics())
        assert t.user_attrs["fidelity"] == "supernet" and t.user_attrs["epochs_done"] == 0.0
        assert 0.0 <= t.user_attrs["val_acc"] <= 1.0
        assert t.user_attrs["costs"]["params"] <= 20_000
    claim = result.study.user_attrs[SUPERNET_ATTR]
    assert claim["state"] == "ready" and Path(claim["checkpoint"]).is_file()
    csv_text = result.files["csv"].read_text()
    assert csv_text.splitlines()[0].count("fidelity") == 1 and ",supernet," in csv_text


def test_scores_are_repeatable_and_match_a_stand_alone_network_with_inherited_weights(searched: Any) -> None:
    result, data, _ = searched
    claim = result.study.user_attrs[SUPERNET_ATTR]
    state = torch.load(claim["checkpoint"], weights_only=False)
    supernet = Supernet(BankPlan.from_dict(state["plan"]))
    supernet.load_state_dict(state["supernet"])
    scorer = Scorer(supernet, data, batch_size=32, bn_batches=2, eval_images=None)
    t = next(t for t in result.study.trials if t.user_attrs.get("state") == "complete")
    spec = A.NetSpec.from_dict(t.user_attrs["spec"])
    assert scorer(spec) == pytest.approx(t.user_attrs["val_acc"])


def test_finalize_can_start_members_from_their_supernet_slices(searched: Any) -> None:
    result, data, tmp = searched
    seen: list[dict[str, torch.Tensor]] = []

    fake = FixedCostFit(seconds=0.0, epochs=1)

    def fit(model: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return fake(model, *args, **kwargs)

    settings = _settings(tmp, "sn", 12)
    A.finalize_study(
        result.study,
        data,
        settings=A.FinalizeSettings(epochs=1, init="supernet"),
        trainer=settings.trainer,
        tracking=settings.tracking,
        export=settings.export,
        fit_fn=fit,
    )
    claim = result.study.user_attrs[SUPERNET_ATTR]
    state = torch.load(claim["checkpoint"], weights_only=False)
    supernet = Supernet(BankPlan.from_dict(state["plan"]))
    supernet.load_state_dict(state["supernet"])
    member = result.front[0]
    spec = A.NetSpec.from_dict(member.user_attrs["spec"])
    want = supernet.parameters_of(supernet.slots(spec))
    got = next(s for s in seen if set(want) <= set(s) and all(s[k].shape == v.shape for k, v in want.items()))
    for key, value in want.items():
        assert torch.equal(got[key], value.detach()), key


def test_a_moved_project_reads_its_supernet_from_its_tracking_dir(searched: Any, tmp_path: Path) -> None:
    result, _, _ = searched
    claim = dict(result.study.user_attrs[SUPERNET_ATTR])
    moved = tmp_path / "moved" / "mlruns"
    (moved / "supernet").mkdir(parents=True)
    name = Path(claim["checkpoint"]).name
    (moved / "supernet" / name).write_bytes(Path(claim["checkpoint"]).read_bytes())
    study = optuna.create_study(directions=["maximize"], storage=f"sqlite:///{tmp_path / 'copy.db'}")
    study.set_user_attr(SUPERNET_ATTR, {**claim, "checkpoint": str(tmp_path / "gone" / "supernet" / name)})

    elsewhere = re.escape(str(tmp_path / "elsewhere" / "supernet" / name))
    with pytest.raises(ConfigError, match=rf"checkpoint .*gone.* is missing \(nor is {elsewhere}\)"):
        inherited_weights(study, tmp_path / "elsewhere")
    with pytest.raises(ConfigError, match=r"is missing\.$"):
        inherited_weights(study)
    load = inherited_weights(study, moved)
    member = result.front[0]
    spec = A.NetSpec.from_dict(member.user_attrs["spec"])
    model = build(spec)
    load(spec, model)
    state = torch.load(moved / "supernet" / name, weights_only=False)
    supernet = Supernet(BankPlan.from_dict(state["plan"]))
    supernet.load_state_dict(state["supernet"])
    want = supernet.parameters_of(supernet.slots(spec))
    got = model.state_dict()
    assert want and all(torch.equal(got[k], v.detach()) for k, v in want.items())


def test_finalize_from_supernet_needs_a_supernet_study(tmp_path: Path) -> None:
    study = optuna.create_study(directions=["maximize"], storage=f"sqlite:///{tmp_path / 'x.db'}")
    with pytest.raises(ConfigError, match="has no trained supernet"):
        A.finalize_study(study, _data(), settings=A.FinalizeSettings(init="supernet"))


def _fidelity(tmp: Path, grace: int = 30) -> tuple[SupernetFidelity, Any, Any]:
    settings = _settings(tmp, "wait", 1, heartbeat_interval=1, grace_period=grace)
    fidelity = SupernetFidelity(
        settings, load_space("fire"), _data(), A.load_hardware("laptop_cpu"), log=lambda _l: None
    )
    storage = f"sqlite:///{tmp / 'w.db'}"
    study = optuna.create_study(
        study_name="wait", storage=storage, directions=["maximize"], load_if_exists=True
    )
    return fidelity, study, StorageLock(storage)


def test_a_worker_waits_for_the_one_training_the_supernet_and_then_loads_it(tmp_path: Path) -> None:
    trainer_side, study, lock = _fidelity(tmp_path)
    waiter, _, _ = _fidelity(tmp_path)
    lines: list[str] = []
    waiter.log = lines.append
    trainer_side._claim(study, "training", "other:1")

    def other_worker() -> None:
        time.sleep(1.5)
        trainer_side._train(study, NullTracker(), "", "other:1")

    thread = threading.Thread(target=other_worker)
    thread.start()
    waiter.prepare(study, lock, NullTracker(), "")
    thread.join()
    assert any("waiting for worker other:1" in line for line in lines)
    assert study.user_attrs[SUPERNET_ATTR]["owner"] == "other:1"
    assert waiter.scorer is not None


def test_a_dead_workers_claim_is_taken_over_and_its_training_resumed(tmp_path: Path) -> None:
    fidelity, study, lock = _fidelity(tmp_path, grace=2)
    lines: list[str] = []
    fidelity.log = lines.append
    study.set_user_attr(
        SUPERNET_ATTR,
        {
            "state": "training",
            "owner": "dead:9",
            "heartbeat": time.time() - 60,
            "fingerprint": fidelity.fingerprint,
        },
    )
    fidelity.prepare(study, lock, NullTracker(), "")
    assert any("worker dead:9 stopped" in line for line in lines)
    assert study.user_attrs[SUPERNET_ATTR]["state"] == "ready"
    assert fidelity.checkpoint.is_file()
