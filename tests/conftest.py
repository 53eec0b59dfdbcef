"""Shared helpers: the project root on sys.path and synthetic IDX files."""

import gzip
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


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
    import fashion_mnist_cnn as fm

    monkeypatch.setattr(fm, "SPLIT_SIZES", {"train": 50, "test": 20})
    return fm.SPLIT_SIZES


def require_real_data():
    """The real data, found the way the runner finds it (--data-dir is not used by the tests;
    $FASHION_MNIST_DIR, Debian's folder, Keras' cache or download). `make test` installs
    Debian's package where it can; these tests fail, never skip, without data."""
    import fashion_mnist_cnn as fm

    global _real_data_error
    if _real_data_error is None:
        try:
            fm.load_fashion_mnist()
            _real_data_error = ""
        except fm.DataError as e:
            _real_data_error = str(e)
    if _real_data_error:
        pytest.fail(f"real Fashion-MNIST not found: {_real_data_error}", pytrace=False)


_real_data_error = None


def inference_accuracy(model, x, y):
    """Accuracy of a saved model in inference mode (dropout off, batch norm's statistics)."""
    return float((model.predict(x, batch_size=256, verbose=0).argmax(axis=1) == y).mean())
