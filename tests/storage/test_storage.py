"""archsearch.storage.database.set_user_attrs: several trial attributes in one storage write."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from archsearch.storage.database import set_user_attrs

ATTRS = {"state": "complete", "val_acc": 0.9, "spec": {"nodes": [{"op": "conv", "out": 8}]}}


def _rdb(tmp_path: Path) -> tuple[str, optuna.Study]:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    return url, optuna.create_study(storage=url, study_name="s", directions=["maximize", "minimize"])


def test_database_storage_writes_all_keys_in_one_transaction(tmp_path: Path, monkeypatch) -> None:
    url, study = _rdb(tmp_path)
    trial = study.ask()
    trial.set_user_attr("state", "running")

    def one_key_path(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("set_user_attrs fell back to one write per key on a database storage")

    monkeypatch.setattr(optuna.storages.RDBStorage, "set_trial_user_attr", one_key_path)
    set_user_attrs(trial, ATTRS)
    monkeypatch.undo()

    assert trial.user_attrs == ATTRS  # the trial's own view is current, the earlier value replaced
    fresh = optuna.load_study(study_name="s", storage=url)
    assert fresh.trials[0].user_attrs == ATTRS


def test_finished_trial_is_refused_like_set_user_attr(tmp_path: Path) -> None:
    _url, study = _rdb(tmp_path)
    trial = study.ask()
    study.tell(trial, [0.5, 1.0])
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        set_user_attrs(trial, ATTRS)
    assert study.trials[0].user_attrs == {}


def test_other_storages_get_the_public_calls() -> None:
    study = optuna.create_study(directions=["maximize", "minimize"])  # in memory
    trial = study.ask()
    set_user_attrs(trial, ATTRS)
    set_user_attrs(trial, {})
    assert study.trials[0].user_attrs == ATTRS


@pytest.mark.postgres
def test_plain_optuna_opens_a_postgres_study_by_the_url_the_sweep_took(
    tmp_path: Path, postgres_url: str
) -> None:
    """The plain ``postgresql://`` URL a sweep accepts needs no driver suffix in Optuna's own tools."""
    import uuid

    from archsearch.cli.compose import compose_sweep
    from archsearch.cli.main import run_sweep
    from archsearch.testing import FixedCostFit

    name = f"plain_{uuid.uuid4().hex[:8]}"
    cfg = compose_sweep(
        tmp_path,
        f"study.storage={postgres_url}",
        f"study.name={name}",
        "study.n_trials=2",
        "tracking.enabled=false",
    )
    run_sweep(cfg, fit_fn=FixedCostFit(seconds=0.0, epochs=1))
    study = optuna.load_study(study_name=name, storage=postgres_url)
    assert len(study.trials) == 2
    assert study.metric_names == ["val_acc", "params", "macs"]


def test_passwords_are_masked_in_logged_text_and_left_out_of_printed_commands() -> None:
    from archsearch.storage.database import mask_passwords, url_without_password

    text = "storage: postgresql://alice:s3cr3t@db:5432/x\nuri: http://bob:pw@h:5000\nplain: sqlite:////a/b.db"
    masked = mask_passwords(text)
    assert "s3cr3t" not in masked and ":pw@" not in masked
    assert "postgresql://alice:***@db:5432/x" in masked and "sqlite:////a/b.db" in masked
    # A pasted command reads the password from PGPASSWORD or ~/.pgpass instead.
    assert url_without_password("postgresql://alice:s3cr3t@db:5432/x?sslmode=require") == (
        "postgresql://alice@db:5432/x?sslmode=require"
    )
    assert url_without_password("sqlite:////a/b.db") == "sqlite:////a/b.db"


def test_the_finalize_command_has_no_password(tmp_path: Path) -> None:
    import archsearch as A
    from archsearch.results.commands import finalize_command

    settings = A.SearchSettings(study=A.StudySettings(storage="postgresql://alice:s3cr3t@db/x"))
    command = finalize_command(settings, A.DataSettings())
    assert "s3cr3t" not in command and "***" not in command
    assert "postgresql://alice@db/x" in command


def test_a_relative_sqlite_storage_is_stored_absolute_in_the_finalize_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A notebook's storage="sqlite:///notebook.db" is relative to its directory; the stored
    finalize command is pasted anywhere, so it names the file absolutely."""
    import archsearch as A
    from archsearch.data.settings import DataSettings
    from archsearch.results.commands import finalize_command

    monkeypatch.chdir(tmp_path)
    settings = A.SearchSettings(study=A.StudySettings(storage="sqlite:///notebook.db"))
    command = finalize_command(settings, DataSettings.from_config("digits"))
    assert f"study.storage=sqlite:///{tmp_path.resolve()}/notebook.db" in command
