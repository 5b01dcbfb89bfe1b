"""User config directories are searched before the packaged files, by archsearch and by Hydra."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from archsearch.errors import ConfigError
from archsearch.hardware.profile import load_hardware
from archsearch.resources import (
    CONF_DIR,
    CONFIG_DIR_ENV,
    LOCAL_CONFIG_DIR,
    ROOT,
    SEARCH_SPACES_DIR,
    available,
    config_dirs,
    find_config,
    group_dirs,
)
from archsearch.results.report import load_model
from archsearch.search.space import load_space


@pytest.fixture
def user_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user config directory named in ARCHSEARCH_CONFIG_DIR, with an empty working directory."""
    user = tmp_path / "myconf"
    for group in ("model", "hardware", "search_spaces"):
        (user / group).mkdir(parents=True)
    monkeypatch.setenv(CONFIG_DIR_ENV, str(user))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return user


def _user_model(user: Path, name: str, source: str = "fire_digits") -> Path:
    text = (CONF_DIR / "model" / f"{source}.yaml").read_text()
    path = user / "model" / f"{name}.yaml"
    path.write_text(text.replace(f"name: {source}", f"name: {name}", 1))
    return path


def test_no_user_dir_means_the_packaged_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CONFIG_DIR_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert config_dirs() == [CONF_DIR]
    assert group_dirs("search_spaces") == [SEARCH_SPACES_DIR]
    assert find_config("model", "squeezenet1_1") == CONF_DIR / "model" / "squeezenet1_1.yaml"


def test_local_archsearch_conf_is_the_default_user_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(CONFIG_DIR_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / LOCAL_CONFIG_DIR / "model").mkdir(parents=True)
    mine = _user_model(tmp_path / LOCAL_CONFIG_DIR, "mynet")
    assert config_dirs() == [tmp_path / LOCAL_CONFIG_DIR, CONF_DIR]
    assert find_config("model", "mynet") == mine


def test_user_files_shadow_packaged_ones_and_add_names(user_dir: Path) -> None:
    shadow = _user_model(user_dir, "squeezenet1_0", source="squeezenet1_1")
    _user_model(user_dir, "mynet")
    assert find_config("model", "squeezenet1_0") == shadow
    assert load_model("squeezenet1_0").name == "squeezenet1_0"
    assert load_model("mynet").name == "mynet"
    assert {"mynet", "squeezenet1_0", "alexnet"} <= set(available("model"))
    assert available("model").count("squeezenet1_0") == 1

    (user_dir / "hardware" / "laptop_cpu.yaml").write_text(
        "description: my box\npeak_gflops: 10\nbandwidth_gbs: 5\n"
    )
    assert load_hardware("laptop_cpu").peak_gflops == 10.0
    assert load_hardware("a100").peak_gflops > 10.0

    shutil.copy(SEARCH_SPACES_DIR / "fire.yaml", user_dir / "search_spaces" / "myspace.yaml")
    assert load_space("myspace").path == user_dir / "search_spaces" / "myspace.yaml"
    assert load_space("fire").path == SEARCH_SPACES_DIR / "fire.yaml"


def test_several_user_dirs_are_searched_in_order(
    user_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    second = tmp_path / "second"
    (second / "model").mkdir(parents=True)
    _user_model(second, "mynet", source="squeezenet1_1")
    _user_model(second, "other")
    first = _user_model(user_dir, "mynet")
    monkeypatch.setenv(CONFIG_DIR_ENV, os.pathsep.join([str(user_dir), str(second)]))
    assert config_dirs() == [user_dir, second, CONF_DIR]
    assert find_config("model", "mynet") == first
    assert find_config("model", "other") == second / "model" / "other.yaml"


def test_a_path_is_taken_as_a_path(user_dir: Path) -> None:
    mine = _user_model(user_dir, "mynet")
    assert find_config("model", str(mine)) == mine
    assert find_config("model", mine) == mine
    with pytest.raises(ConfigError, match=r"^model file nets/gone\.yaml not found\.$"):
        find_config("model", "nets/gone.yaml")


def test_missing_name_is_one_sentence_naming_group_name_and_choices(user_dir: Path) -> None:
    _user_model(user_dir, "mynet")
    with pytest.raises(ConfigError) as info:
        load_model("nope")
    sentence = str(info.value)
    assert sentence.startswith("model 'nope' not found in "), sentence
    assert str(user_dir / "model") in sentence and str(CONF_DIR / "model") in sentence
    assert "; available: alexnet, fire_digits, fire_mnist, mynet, " in sentence
    assert sentence.endswith(".") and "\n" not in sentence
    with pytest.raises(ConfigError, match=r"^search_spaces 'firee' not found in .*; available: fire, "):
        load_space("firee")


def test_env_var_naming_no_directory_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CONFIG_DIR_ENV, str(tmp_path / "absent"))
    with pytest.raises(ConfigError, match=rf"^{CONFIG_DIR_ENV} names .*absent, which is not a directory\.$"):
        config_dirs()


def _cli(cwd: Path, user: Path | None, module: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop(CONFIG_DIR_ENV, None)
    if user is not None:
        env[CONFIG_DIR_ENV] = str(user)
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_cli_composes_a_user_model_that_shadows_a_shipped_one(user_dir: Path, tmp_path: Path) -> None:
    # squeezenet1_1's 1,235,496 parameters under the name squeezenet1_0 (which has 1,248,424).
    _user_model(user_dir, "squeezenet1_0", source="squeezenet1_1")
    _user_model(user_dir, "mynet")
    done = _cli(tmp_path / "work", user_dir, "archsearch.report", "model=squeezenet1_0")
    assert done.returncode == 0, done.stderr
    assert "1,235,496" in done.stdout and "1,248,424" not in done.stdout
    done = _cli(tmp_path / "work", user_dir, "archsearch.report", "model=mynet")
    assert done.returncode == 0, done.stderr
    assert "fire" in done.stdout

    done = _cli(tmp_path / "work", None, "archsearch.report", "model=mynet")
    assert done.returncode == 2 and "'mynet'" in done.stderr


def test_cli_bad_config_dir_exits_2_with_one_sentence(tmp_path: Path) -> None:
    done = _cli(tmp_path, tmp_path / "absent", "archsearch", "model=fire_digits")
    assert done.returncode == 2
    assert done.stderr == f"error: {CONFIG_DIR_ENV} names {tmp_path / 'absent'}, which is not a directory.\n"


@pytest.mark.slow
def test_cli_sweep_uses_a_user_search_space(user_dir: Path, tmp_path: Path) -> None:
    shutil.copy(SEARCH_SPACES_DIR / "fire.yaml", user_dir / "search_spaces" / "myspace.yaml")
    work = tmp_path / "work"
    done = _cli(
        work,
        user_dir,
        "archsearch",
        "+sweep=fire",
        "sweep.space=myspace",
        "data=synthetic",
        "study.n_trials=1",
        "trainer.epochs=1",
        "export.plots=false",
        "tracking.enabled=false",
    )
    assert done.returncode == 0, done.stderr
    # An exported net is named after the space it was drawn from.
    nets = list((work / "results" / "fire" / "nets").glob("*.yaml"))
    assert len(nets) == 1 and "name: myspace-" in nets[0].read_text()


@pytest.mark.slow
def test_wheel_ships_the_config_tree_and_search_spaces(tmp_path: Path) -> None:
    # Only the sources go into the build, so a stale build/ or egg-info in the checkout cannot leak in.
    src = tmp_path / "src"
    shutil.copytree(ROOT / "archsearch", src / "archsearch", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    (wheel,) = tmp_path.glob("archsearch-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        "archsearch/conf/config.yaml",
        "archsearch/conf/report.yaml",
        "archsearch/conf/model/squeezenet1_1.yaml",
        "archsearch/conf/sweep/fire.yaml",
        "archsearch/search_spaces/fire.yaml",
    }
    assert expected <= names, sorted(expected - names)
    packaged = {p.relative_to(ROOT).as_posix() for p in (ROOT / "archsearch").rglob("*.yaml")}
    assert packaged <= names, sorted(packaged - names)
