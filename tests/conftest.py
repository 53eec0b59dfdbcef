"""Shared helpers: the project root on sys.path, synthetic IDX files, and one tiny real grid
that every test which only reads a finished grid shares (copy it before changing it)."""

import gzip
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Every shared run pins float32: --precision auto picks bfloat16 on CPUs that have it, and the
# suite must give the same numbers on every machine (the precision choice has tests of its own).
# The shared grid: 2 variants x 2 seeds, 576 training images, 2 epochs, scored on the first
# 1,024 test images. Small, but every output of a real grid, the multi-seed statistics too.
# Sizes are whole batches: a last, smaller batch would make Keras trace each step again.
TINY_GRID = ["--precision", "float32", "--subset", "640", "--test-images", "1024",
             "--shift-images", "512", "--epochs", "2", "--batch-size", "64", "--activation", "relu", "--downsampling", "maxpool", "strided",
             "--optimizer", "adam", "--seeds", "0", "1"]
TINY_NAMES = ["CNN_ReLU_MaxPool_Adam", "CNN_ReLU_Strided_Adam"]
# One variant, 2,304 training images, 2 epochs (72 steps): long enough to learn (~70%).
SHORT_RUN = ["--precision", "float32", "--subset", "2560", "--test-images", "1024",
             "--shift-images", "100", "--epochs", "2", "--batch-size", "64", "--no-tta", "--no-report", "--activation", "relu",
             "--downsampling", "maxpool", "--optimizer", "adam"]
# The job-array grid: 2 variants x 2 seeds, bit-deterministic, for two worker processes.
WORKER_GRID = ["--precision", "float32", "--subset", "320", "--test-images", "512",
               "--shift-images", "100", "--epochs", "1", "--batch-size", "32", "--no-tta", "--deterministic", "--activation", "relu",
               "leakyrelu", "--downsampling", "strided", "--optimizer", "sgd", "--seeds", "0", "1"]


SHARED_FIXTURES = ("tiny_grid", "two_workers", "short_run", "sweep")  # sweep: test_lr_axis.py


def pytest_itemcollected(item):
    """Under pytest-xdist (-n 2 --dist loadgroup, pytest.ini) every test that reads one of the
    session's shared runs goes to the worker that trained them, so each is trained once."""
    shared = [name for name in SHARED_FIXTURES if name in item.fixturenames]
    if shared:
        item.add_marker(pytest.mark.xdist_group(shared[0]))


def write_idx(path, array, magic, compress=True):
    """Write array as an IDX file: big-endian magic, one int32 per dimension, uint8 data."""
    array = np.asarray(array, dtype=np.uint8)
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    payload = header + array.tobytes()
    path = Path(path)
    path.write_bytes(gzip.compress(payload) if compress else payload)
    return path


def write_dataset(folder, n_train, n_test, compress=True, seed=0):
    """The four official file names holding random images and balanced labels."""
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if compress else ""
    for split, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{split}-images-idx3-ubyte{suffix}",
                  rng.integers(0, 256, (n, 28, 28)), 0x803, compress)
        write_idx(folder / f"{split}-labels-idx1-ubyte{suffix}", np.arange(n) % 10, 0x801, compress)
    return folder


@pytest.fixture
def small_sizes(monkeypatch):
    """Make 50 train / 20 test images the 'official' sizes, so synthetic sets are valid."""
    from fmlab.run import data

    monkeypatch.setattr(data, "SPLIT_SIZES", {"train": 50, "test": 20})
    return data.SPLIT_SIZES


def require_real_data():
    """The real data, found the way the runner finds it (--data-dir is not used by the tests;
    $FASHION_MNIST_DIR, Debian's folder, Keras' cache or download). `make test` installs
    Debian's package where it can; these tests fail, never skip, without data."""
    from fmlab.run import data
    from fmlab.core.errors import DataError

    global _real_data_error
    if _real_data_error is None:
        try:
            data.load_fashion_mnist()
            _real_data_error = ""
        except DataError as e:
            _real_data_error = str(e)
    if _real_data_error:
        pytest.fail(f"real Fashion-MNIST not found: {_real_data_error}", pytrace=False)


_real_data_error = None


def assert_real_png(path, min_side=400):
    """A drawn figure: a PNG that decodes, of a readable size, with more than a background
    (a file size alone passes for a blank or broken canvas)."""
    import matplotlib.image

    pixels = matplotlib.image.imread(path)
    assert min(pixels.shape[:2]) >= min_side, f"{path}: {pixels.shape[:2]} pixels"
    assert pixels[..., :3].std() > 0.05, f"{path} looks blank"
    return pixels


def inference_accuracy(model, x, y):
    """Accuracy of a saved model in inference mode (dropout off, batch norm's statistics)."""
    return float((model.predict(x, batch_size=256, verbose=0).argmax(axis=1) == y).mean())


@pytest.fixture(scope="session")
def tiny_grid(tmp_path_factory):
    """TINY_GRID trained once, in this process, with what it printed and the progress line
    of every report it drew on the way: (output dir, stdout, [(progress, summary's top)])."""
    import contextlib
    import io

    import fashion_mnist_cnn as fm

    require_real_data()
    out = tmp_path_factory.mktemp("tiny_grid")
    drawn = []

    def recording(output_dir, runs, x_test, progress=None, wide=None):
        paths = real(output_dir, runs, x_test, progress, wide)
        drawn.append((progress, (Path(output_dir) / "summary.md").read_text().splitlines()[2],
                      (Path(output_dir) / "report.html").exists()))
        return paths

    real, stdout = fm.write_report, io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(stdout):
        patch.setattr(fm, "write_report", recording)
        code = fm.main([*TINY_GRID, "--output-dir", str(out)])
    assert code == 0, stdout.getvalue()[-3000:]
    return out, stdout.getvalue(), drawn


@pytest.fixture(scope="session")
def short_run(tmp_path_factory):
    """SHORT_RUN trained once, in this process, on one device: (output dir, stdout)."""
    import contextlib
    import io

    import fashion_mnist_cnn as fm

    require_real_data()
    out, stdout = tmp_path_factory.mktemp("short_run"), io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = fm.main([*SHORT_RUN, "--output-dir", str(out)])
    assert code == 0, stdout.getvalue()[-3000:]
    return out, stdout.getvalue()


def start_cli(*args, env=None):
    """The runner as a script in a process of its own."""
    import os
    import subprocess

    return subprocess.Popen([sys.executable, str(ROOT / "fashion_mnist_cnn.py"), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})})


def finish(process):
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, err[-3000:]
    return out


@pytest.fixture(scope="session")
def two_workers(tmp_path_factory):
    """WORKER_GRID as two worker processes on one shared output dir at the same time, as the
    tasks of a job array: one takes its slice from Slurm's variables, the other from a
    Kubernetes Indexed Job's. (shared dir, [stdout of each])."""
    require_real_data()
    shared = tmp_path_factory.mktemp("workers") / "shared"
    slurm = {"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_MIN": "7", "SLURM_ARRAY_TASK_COUNT": "2"}
    workers = [start_cli(*WORKER_GRID, "--output-dir", str(shared), env=slurm),
               start_cli(*WORKER_GRID, "--shard-count", "2", "--output-dir", str(shared),
                         env={"JOB_COMPLETION_INDEX": "1"})]
    return shared, [finish(p) for p in workers]


def copy_of(grid_dir, target):
    """A copy of a finished grid's folder for a test that changes it."""
    shutil.copytree(grid_dir, target)
    return Path(target)


@pytest.fixture(autouse=True)
def process_state_reset_around_each_test():
    """What a run in-process leaves process-wide, undone, so every test starts the same,
    whichever ran before it on this worker: the dtype policy (mixed_bfloat16 where --precision
    auto picks it) and TensorFlow's op determinism (--deterministic), which picks other
    kernels and so other numbers, each reproducible: a later in-process run would not be the
    run its subprocess twin is. TensorFlow's public API can only turn determinism on."""
    import keras
    from tensorflow.python.framework import config

    def reset():
        keras.mixed_precision.set_dtype_policy("float32")
        config.disable_op_determinism()

    reset()
    yield
    reset()
