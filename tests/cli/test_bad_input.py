"""Bad input through the real command line: one sentence on stderr, exit 2, nothing written.

Every case runs ``python -m archsearch`` in its own empty directory; afterwards neither the
study storage nor the MLflow backend (both under ``mlruns/`` by default) nor the export may
exist. The subprocesses run side by side (a process start costs seconds; the checks do not).
"""

from __future__ import annotations

import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from PIL import Image

SWEEP = ("+sweep=fire", "data=synthetic", "export.plots=false")

FILES = {
    "net_yaml.yaml": "name: x\nnodes: [\n",
    "net_op.yaml": "name: x\ninput: [1, 8, 8]\nnum_classes: 10\nnodes:\n"
    "  - {name: c1, op: warp, out: 8}\n  - {name: gap, op: global_avgpool}\n",
    "net_graph.yaml": "name: x\ninput: [1, 8, 8]\nnum_classes: 10\nnodes:\n"
    "  - {name: c1, op: conv, out: 8, kernel: 3}\n  - {name: a, op: add, inputs: [c1, nowhere]}\n"
    "  - {name: gap, op: global_avgpool}\n",
    "space_yaml.yaml": "depth: {int: [2, 6]\n",
    "space_dist.yaml": "depth: {gaussian: [2, 6]}\n",
    "space_low_high.yaml": "depth: {int: [6, 2]}\n",
    "space_step.yaml": "base_e: {int: [16, 60], step: 16}\n",
    "conf/model/broken.yaml": "name: broken\nnodes: [1, 2\n",
    "fmnist_wrong/train-images-idx3-ubyte.gz": "not gzip\n",
    "flat_images/notes.txt": "images belong in class folders\n",
    "empty_class/b/readme.txt": "no images here\n",
    "corrupt_images/b/bad.png": "not a png\n",
}


def write_binary_inputs(files: Path) -> None:
    """Images and arrays the data cases read (FILES holds the text ones)."""
    for folder in ("flat_images", "empty_class/a", "one_class/a", "corrupt_images/a", "corrupt_images/b"):
        (files / folder).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (6, 6), "red").save(files / folder / "ok.png")
    x = np.zeros((10, 8, 8), dtype=np.float32)
    np.savez(files / "labels_range.npz", x=x, y=np.arange(10) % 3 - 1)
    np.savez(files / "lengths.npz", x=x, y=np.arange(9) % 2)
    np.savez(files / "lengths_ok.npz", x=x, y=np.arange(10) % 2)
    np.savez(files / "huge_labels.npz", x=x, y=np.where(np.arange(10) % 2 == 0, 0, 10**9))
    np.savez(
        files / "nan.npz", x=np.where(np.arange(640).reshape(10, 8, 8) == 5, np.nan, x), y=np.arange(10) % 2
    )
    np.savez(files / "two_channels.npz", x=np.zeros((10, 2, 8, 8), np.uint8), y=np.arange(10) % 2)
    # A .npy whose header declares 5 TB: loading it raised a bare MemoryError.
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (20000000000, 8, 8), }"
    header += " " * (63 - (10 + len(header)) % 64) + "\n"
    (files / "huge.npy").write_bytes(
        b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode()
    )
    np.save(files / "lab.npy", np.arange(10) % 2)
    # A class folder holding a symlink to itself.
    for folder in ("loop_images/a", "loop_images/b"):
        (files / folder).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (6, 6), "red").save(files / folder / "ok.png")
    (files / "loop_images/a/self").symlink_to("self")


FOLDER = (
    "+sweep=fire",
    "data=image_folder",
    "data.size=[8,8]",
    "data.cache_dir={d}/cache",
    "export.plots=false",
)
ARRAYS = ("+sweep=fire", "data=arrays", "export.plots=false")

# id -> (arguments, fragments the one-line message must contain); {d} is the files' directory.
CASES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "malformed_model_yaml": (("model_file={d}/net_yaml.yaml",), ("net_yaml.yaml is not valid YAML",)),
    "malformed_space_yaml": (
        (*SWEEP, "sweep.space={d}/space_yaml.yaml"),
        ("space_yaml.yaml is not valid YAML",),
    ),
    "malformed_conf_yaml": (
        ("--config-dir={d}/conf", "model=broken"),
        ("conf/model/broken.yaml is not valid YAML", "line 3"),
    ),
    "unknown_op": (("model_file={d}/net_op.yaml",), ("'op' is 'warp'", "allowed: add")),
    "model_fails_validation": (("model_file={d}/net_graph.yaml",), ("names unknown node 'nowhere'",)),
    "unknown_distribution": (
        (*SWEEP, "sweep.space={d}/space_dist.yaml"),
        ("space_dist.yaml key 'depth' has unknown distribution type 'gaussian'",),
    ),
    "low_above_high": ((*SWEEP, "sweep.space={d}/space_low_high.yaml"), ("'depth' has low 6 > high 2",)),
    "step_does_not_divide": (
        (*SWEEP, "sweep.space={d}/space_step.yaml"),
        ("step 16, which does not divide",),
    ),
    "unknown_objective": (
        (*SWEEP, "+objectives.flops_per_byte=minimize"),
        ("objectives.flops_per_byte is not a known metric; allowed: val_acc",),
    ),
    "unknown_constraint": (
        (*SWEEP, "+constraints.speed.max=3"),
        ("constraints.speed is not a known metric",),
    ),
    "invalid_direction": (
        (*SWEEP, "objectives.params=smaller"),
        ("objectives.params has direction 'smaller'; allowed: minimize, maximize",),
    ),
    "zero_trials": ((*SWEEP, "study.n_trials=0"), ("study.n_trials must be a positive integer, got 0",)),
    "grace_not_above_heartbeat": (
        (*SWEEP, "study.heartbeat_interval=10", "study.grace_period=10"),
        ("study.grace_period must be an integer >= 11",),
    ),
    "missing_dataset_dir": (
        ("+sweep=fire", "data=fashion_mnist", "data.dir={d}/no_such_dir"),
        ("Fashion-MNIST not found", "no_such_dir"),
    ),
    "wrong_dataset_files": (
        ("+sweep=fire", "data=fashion_mnist", "data.dir={d}/fmnist_wrong"),
        ("fmnist_wrong/train-images-idx3-ubyte.gz cannot be read",),
    ),
    "image_folder_missing": (
        (*FOLDER, "data.dir={d}/no_such_images"),
        ("image folder", "no_such_images does not exist"),
    ),
    "image_folder_unset": ((*FOLDER,), ("data.dir must name the image folder",)),
    "image_folder_no_class_folders": ((*FOLDER, "data.dir={d}/flat_images"), ("has no class folders",)),
    "image_folder_empty_class": (
        (*FOLDER, "data.dir={d}/empty_class"),
        ("class folder", "empty_class/b holds no images"),
    ),
    "image_folder_one_class": ((*FOLDER, "data.dir={d}/one_class"), ("needs at least two",)),
    "image_folder_corrupt_image": (
        (*FOLDER, "data.dir={d}/corrupt_images"),
        ("corrupt_images/b/bad.png cannot be read", "data.skip_bad=true"),
    ),
    "image_folder_bad_channels": (
        (*FOLDER, "data.dir={d}/corrupt_images", "data.channels=4"),
        ("data.channels must be 1 (grey) or 3 (RGB), got 4",),
    ),
    "arrays_missing_file": ((*ARRAYS, "data.path={d}/nowhere.npz"), ("nowhere.npz does not exist",)),
    "arrays_labels_out_of_range": (
        (*ARRAYS, "data.path={d}/labels_range.npz"),
        ("y must be class indices 0..K-1, got labels from -1 to 1",),
    ),
    "arrays_num_classes_text": (
        (*ARRAYS, "data.path={d}/lengths_ok.npz", "data.num_classes=abc"),
        ("data.num_classes must be an integer >= 2 or null, got 'abc'",),
    ),
    "arrays_huge_labels": (
        (*ARRAYS, "data.path={d}/huge_labels.npz"),
        ("y's labels run up to 1000000000 but only 2 distinct values occur",),
    ),
    "arrays_huge_header": (
        (
            "+sweep=fire",
            "data=arrays",
            "export.plots=false",
            "data.path={d}/huge.npy",
            "data.labels={d}/lab.npy",
        ),
        ("huge.npy declares an array larger than this machine's memory",),
    ),
    "folder_symlink_loop": (
        (*FOLDER, "data.dir={d}/loop_images"),
        ("loop_images/a/self cannot be read (Too many levels of symbolic links)",),
    ),
    "arrays_lengths_differ": (
        (*ARRAYS, "data.path={d}/lengths.npz"),
        ("x holds 10 images but y has shape (9,)",),
    ),
    "arrays_nan": ((*ARRAYS, "data.path={d}/nan.npz"), ("x holds NaN or infinite values",)),
    "arrays_channels_not_convertible": (
        (*ARRAYS, "data.path={d}/two_channels.npz", "data.channels=3"),
        ("x has 2 channel(s), which cannot be converted to 3",),
    ),
    "unreachable_storage": (
        (*SWEEP, "study.storage=postgresql://someone:secret@127.0.0.1:1/nowhere"),
        ("study.storage 'postgresql://someone:***@127.0.0.1:1/nowhere' cannot be reached", "refused"),
    ),
    "unreachable_tracking": (
        (*SWEEP, "tracking.uri=http://127.0.0.1:1"),
        ("tracking.uri 'http://127.0.0.1:1' cannot be reached",),
    ),
    "unknown_group_option": (
        ("model=nope",),
        ("model 'nope' is not declared under conf/model/ or model/ of your config directories; available:",),
    ),
    "unknown_key_override": (
        (*SWEEP, "trainer.nope=1"),
        ("override 'trainer.nope' names a key the config does not have", "+trainer.nope=VALUE"),
    ),
    "unparsable_override": (("seed=[1,",), ("override 'seed=[1,' cannot be parsed",)),
    "optimizer_lr_not_a_number": (
        (*SWEEP, "trainer.optimizer.lr=fast"),
        ("trainer.optimizer.lr must be a number > 0, got 'fast'",),
    ),
    "unknown_optimizer": (
        (*SWEEP, "trainer.optimizer._target_=torch.optim.Nope"),
        ("trainer.optimizer._target_", "torch.optim.SGD"),
    ),
    "negative_dsd_sparsity": (
        (*SWEEP, "trainer.dsd.sparsity=-0.5"),
        ("trainer.dsd.sparsity must be a number in (0, 1), got -0.5",),
    ),
    "zero_cost_batch": ((*SWEEP, "cost.batch_size=0"), ("cost.batch_size must be an integer >= 1, got 0",)),
    "zero_latency_repeats": (
        (*SWEEP, "latency.repeats=0"),
        ("latency.repeats must be an integer >= 1, got 0",),
    ),
    "misspelled_key": ((*SWEEP, "studdy.n_trials=3"), ("(did you mean 'study.n_trials'?)",)),
    "misspelled_trainer_key": ((*SWEEP, "trainer.epoch=3"), ("(did you mean 'trainer.epochs'?)",)),
    "misspelled_added_key": ((*SWEEP, "+studdy.n_trials=3"), ("key 'studdy' is not a setting",)),
    "study_name_escapes": ((*SWEEP, "study.name=../../esc"), ("study.name '../../esc' must not contain",)),
    "export_dir_is_a_file": (
        (*SWEEP, "export.dir={d}/net_yaml.yaml"),
        ("export.dir", "net_yaml.yaml is a file"),
    ),
    "export_dir_unwritable": ((*SWEEP, "export.dir=/proc/archsearch_x"), ("cannot be written",)),
    "workers_zero": ((*SWEEP, "+workers=local", "workers.n=0"), ("workers.n must be an integer >= 1",)),
    "tracking_uri_file_store": ((*SWEEP, "tracking.uri=file:///tmp/x"), ("tracking.uri 'file:///tmp/x'",)),
    "tracking_uri_unknown_scheme": ((*SWEEP, "tracking.uri=bogus://x"), ("tracking.uri 'bogus://x'",)),
    "sampler_bad_argument": (
        (*SWEEP, "+sampler.populaton_size=3"),
        ("sampler config could not be instantiated", "unexpected keyword argument 'populaton_size'"),
    ),
    "unknown_latency_clock": (
        (*SWEEP, "latency.clock=sundial"),
        ("latency.clock is 'sundial'; allowed: wall, cpu",),
    ),
}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory, archsearch_cli: Any) -> dict[str, Any]:
    """Every case's (CompletedProcess, its working directory), run four at a time."""
    files = tmp_path_factory.mktemp("inputs")
    for name, text in FILES.items():
        (files / name).parent.mkdir(parents=True, exist_ok=True)
        (files / name).write_text(text)
    write_binary_inputs(files)
    runs = tmp_path_factory.mktemp("runs")
    cases = dict(CASES)
    postgres = os.environ.get("ARCHSEARCH_TEST_POSTGRES")
    if postgres:
        # The tracking backend is found dead before the PostgreSQL study is created.
        cases["unreachable_tracking_with_postgres_storage"] = (
            (
                *SWEEP,
                f"study.storage={postgres}",
                f"study.name=never_{uuid.uuid4().hex[:8]}",
                "tracking.uri=http://127.0.0.1:1",
            ),
            ("tracking.uri 'http://127.0.0.1:1' cannot be reached",),
        )

    def run(case: str) -> tuple[str, Any]:
        cwd = runs / case
        cwd.mkdir()
        args = [a.format(d=files) for a in cases[case][0]]
        return case, (archsearch_cli.run(cwd, *args, timeout=120), cwd)

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(pool.map(run, cases))


@pytest.mark.slow
@pytest.mark.parametrize("case", [*CASES, "unreachable_tracking_with_postgres_storage"])
def test_bad_input_is_one_sentence_exit_2_and_writes_nothing(case: str, outcomes: dict[str, Any]) -> None:
    if case not in outcomes:
        pytest.skip("ARCHSEARCH_TEST_POSTGRES is not set (.ci/run starts PostgreSQL and sets it)")
    done, cwd = outcomes[case]
    fragments = CASES[case][1] if case in CASES else ("tracking.uri 'http://127.0.0.1:1' cannot be reached",)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and lines[0].endswith("."), done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    # Nothing at all: no study, MLflow store or export, and no Hydra outputs/ folder or log.
    assert sorted(p.name for p in cwd.iterdir()) == []
    if case == "unreachable_tracking_with_postgres_storage":
        name = next(a for a in done.args if a.startswith("study.name=")).split("=", 1)[1]
        url = os.environ["ARCHSEARCH_TEST_POSTGRES"]
        assert name not in optuna.get_all_study_names(storage=url)
