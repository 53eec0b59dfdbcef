"""Fashion-MNIST: the four official IDX files, found, checked and split (no TensorFlow:
the tf.data pipeline that feeds training is fmlab.run.pipeline).

    (x_train, y_train), (x_test, y_test) = load_fashion_mnist()      # uint8, as stored
    data = prepare_data(None, subset=None, val_fraction=0.1, seed=0)  # scaled, split

Look-up order for the files: --data-dir, $FASHION_MNIST_DIR, Debian's package folder
(`apt-get install dataset-fashion-mnist`), then Keras' cache and downloader.
"""

import gzip
import math
import os
from pathlib import Path

import numpy as np

from fmlab.core.dataset_facts import CLASS_NAMES, SPLIT_SIZES  # noqa: F401  (others import them from here too)
from fmlab.core.errors import DataError

SYSTEM_DATA_DIR = Path("/usr/share/datasets/fashion-mnist")
DATA_DIR_VARIABLE = "FASHION_MNIST_DIR"  # environment variable: a folder with the IDX files
IDX_FILES = {  # split -> (images file, labels file), the official names
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path, expected_magic):
    """Read one IDX file (gzip or raw) into a uint8 array, checking its header and size."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            gz = f.read(2) == b"\x1f\x8b"
        raw = gzip.open(path).read() if gz else path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, EOFError) as e:  # truncated or corrupt gzip stream
        raise DataError(f"{path}: cannot decompress ({e})") from None
    if len(raw) < 8:
        raise DataError(f"{path}: too short for an IDX header ({len(raw)} bytes)")
    magic = int.from_bytes(raw[:4], "big")
    if magic != expected_magic:
        raise DataError(f"{path}: wrong magic number 0x{magic:08x}, expected 0x{expected_magic:08x}")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if len(raw) != header + math.prod(shape):
        raise DataError(f"{path}: size {len(raw)} bytes does not match header shape {shape} "
                        f"({header + math.prod(shape)} bytes); truncated or corrupt")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def find_idx_file(data_dir, stem):
    for name in (stem + ".gz", stem):
        if (Path(data_dir) / name).is_file():
            return Path(data_dir) / name
    raise DataError(f"{Path(data_dir) / (stem + '.gz')}: file not found (nor uncompressed {stem})")


def load_split(data_dir, split):
    """Images (N, 28, 28) uint8 and labels (N,) uint8 of one split, checked."""
    images_stem, labels_stem = IDX_FILES[split]
    images_path, labels_path = find_idx_file(data_dir, images_stem), find_idx_file(data_dir, labels_stem)
    images, labels = read_idx(images_path, 0x803), read_idx(labels_path, 0x801)
    if images.shape[1:] != (28, 28):
        raise DataError(f"{images_path}: images are {images.shape[1:]}, expected (28, 28)")
    if len(images) != SPLIT_SIZES[split]:
        raise DataError(f"{images_path}: {len(images)} images, expected {SPLIT_SIZES[split]}")
    if len(labels) != len(images):
        raise DataError(f"{labels_path}: {len(labels)} labels for {len(images)} images")
    if labels.max() >= len(CLASS_NAMES):
        raise DataError(f"{labels_path}: label {labels.max()} out of range 0-{len(CLASS_NAMES) - 1}")
    return images, labels


def load_fashion_mnist(data_dir=None):
    """(x_train, y_train), (x_test, y_test) as uint8, from the first source that has them.

    A folder given (--data-dir, $FASHION_MNIST_DIR) but holding bad files is an error, not a
    reason to look elsewhere.
    """
    for folder, what in ((data_dir, "--data-dir"), (os.environ.get(DATA_DIR_VARIABLE), DATA_DIR_VARIABLE)):
        if folder:
            if not Path(folder).is_dir():
                raise DataError(f"{folder}: {what} is not a folder")
            return load_split(folder, "train"), load_split(folder, "test")
    if SYSTEM_DATA_DIR.is_dir():
        return load_split(SYSTEM_DATA_DIR, "train"), load_split(SYSTEM_DATA_DIR, "test")
    try:
        import keras  # here: the download is the last resort, and --help needs no TensorFlow
        return keras.datasets.fashion_mnist.load_data()
    except Exception as e:  # Keras raises several kinds for "offline"; all mean the same here
        cache = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets/fashion-mnist"
        raise DataError(
            f"no Fashion-MNIST data found: looked in {SYSTEM_DATA_DIR} and {cache}, and Keras' "
            f"download failed ({type(e).__name__}). Install it with "
            f"'apt-get install dataset-fashion-mnist', or pass --data-dir DIR (or set "
            f"{DATA_DIR_VARIABLE}=DIR) to a folder holding the four IDX files, or go online so "
            f"Keras can download it") from None


def prepare_data(data_dir, subset, val_fraction, seed, test_images=None):
    """Scaled (N, 28, 28, 1) float32 arrays: a stratified train/validation split and the test
    set (its first test_images, all by default)."""
    from sklearn.model_selection import train_test_split  # here: --help stays fast
    (x_train, y_train), (x_test, y_test) = load_fashion_mnist(data_dir)
    if subset:
        x_train, _, y_train, _ = train_test_split(
            x_train, y_train, train_size=subset, stratify=y_train, random_state=seed)
    x_train, x_val, y_train, y_val = train_test_split(
        x_train, y_train, test_size=val_fraction, stratify=y_train, random_state=seed)
    return {"train": (scale_images(x_train), y_train.astype(np.int32)),
            "val": (scale_images(x_val), y_val.astype(np.int32)),
            "test": (scale_images(x_test[:test_images]), y_test[:test_images].astype(np.int32))}


def prepare_test_images(data_dir):
    """The test images alone, scaled like prepare_data's, for the report's figures."""
    _, (x_test, _) = load_fashion_mnist(data_dir)
    return scale_images(x_test)


def scale_images(images):
    """uint8 (N, 28, 28) -> float32 (N, 28, 28, 1) in [0, 1]."""
    return (images.astype(np.float32) / 255.0)[..., None]
