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
    PACKAGE_DIR,
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


def test_the_running_install_finds_both_shipped_trees() -> None:
    assert (CONF_DIR / "config.yaml").is_file() and (CONF_DIR / "model" / "fire_digits.yaml").is_file()
    assert (SEARCH_SPACES_DIR / "fire.yaml").is_file()
    if (ROOT / "pyproject.toml").is_file():
        # A source checkout (editable install, or PYTHONPATH): the trees sit at the top of the repository.
        assert (CONF_DIR, SEARCH_SPACES_DIR) == (ROOT / "conf", ROOT / "search_spaces")
    else:
        # A wheel: the build mapped them into the package.
        assert (CONF_DIR, SEARCH_SPACES_DIR) == (PACKAGE_DIR / "conf", PACKAGE_DIR / "search_spaces")


def test_pyproject_lists_every_package() -> None:
    tomllib = pytest.importorskip("tomllib")
    if not (ROOT / "pyproject.toml").is_file():
        pytest.skip("not a source checkout")
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in ("archsearch", "hydra_plugins")
        for init in (ROOT / top).rglob("__init__.py")
    }
    mapped = setuptools["package-dir"]
    assert mapped == {"archsearch.conf": "conf", "archsearch.search_spaces": "search_spaces"}
    assert set(setuptools["packages"]) == found | set(mapped) | {"hydra_plugins"}


#: What a wheel needs from the checkout: no stale build/ or egg-info can leak in.
_SOURCES = ("archsearch", "conf", "search_spaces", "hydra_plugins", "pyproject.toml", "README.md")


@pytest.mark.slow
def test_wheel_ships_the_config_tree_and_search_spaces(tmp_path: Path) -> None:
    if not (ROOT / "pyproject.toml").is_file():
        pytest.skip("not a source checkout")
    src = tmp_path / "src"
    for name in _SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(ROOT / name, src / name)
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    done = subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    (wheel,) = tmp_path.glob("archsearch-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {
        f"archsearch/{p.relative_to(tree.parent).as_posix()}"
        for tree in (CONF_DIR, SEARCH_SPACES_DIR)
        for p in tree.rglob("*.yaml")
    }
    assert (
        "archsearch/conf/model/squeezenet1_1.yaml" in shipped
        and "archsearch/search_spaces/fire.yaml" in shipped
    )
    assert shipped <= names, sorted(shipped - names)

    # Installed from the wheel and run from elsewhere, the package reads its own copies.
    target = tmp_path / "site"
    done = subprocess.run(
        [*pip, "install", "--no-deps", "--target", str(target), str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    probe = (
        "import archsearch, archsearch.resources as r; "
        "print(archsearch.__file__, r.CONF_DIR, r.SEARCH_SPACES_DIR, sep='\\n')"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    env.pop(CONFIG_DIR_ENV, None)
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    package = target / "archsearch"
    assert done.stdout.splitlines() == [
        str(package / "__init__.py"),
        str(package / "conf"),
        str(package / "search_spaces"),
    ]
    done = subprocess.run(
        [sys.executable, "-m", "archsearch.report", "model=squeezenet1_1"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "1,235,496" in done.stdout
