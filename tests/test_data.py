"""The IDX loader, its error messages, and the train/validation split."""

import gzip

import numpy as np
import pytest
from conftest import require_real_data, write_dataset, write_idx

from fmlab.run import data
import fashion_mnist_cnn as fm
from fmlab.core.errors import DataError


@pytest.mark.parametrize("compress", [True, False])
def test_reads_idx_gzip_or_raw(tmp_path, compress):
    images = np.random.default_rng(0).integers(0, 256, (7, 28, 28))
    path = write_idx(tmp_path / "x", images, 0x803, compress)
    np.testing.assert_array_equal(data.read_idx(path, 0x803), images)


def test_truncated_file_is_named(tmp_path):
    path = write_idx(tmp_path / "x", np.zeros((4, 28, 28)), 0x803, compress=False)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"x: size .* truncated"):
        data.read_idx(path, 0x803)


def test_truncated_gzip_stream(tmp_path):
    path = write_idx(tmp_path / "x.gz", np.zeros((40, 28, 28)), 0x803)
    path.write_bytes(path.read_bytes()[:30])
    with pytest.raises(DataError, match="x.gz: cannot decompress"):
        data.read_idx(path, 0x803)


def test_wrong_magic(tmp_path):
    path = write_idx(tmp_path / "labels", np.zeros(4), 0x801)
    with pytest.raises(DataError, match="wrong magic number 0x00000801, expected 0x00000803"):
        data.read_idx(path, 0x803)


def test_too_short_for_header(tmp_path):
    path = tmp_path / "empty"
    path.write_bytes(gzip.compress(b"\x00\x00"))
    with pytest.raises(DataError, match="too short"):
        data.read_idx(path, 0x803)


def test_valid_synthetic_dataset_loads(tmp_path, small_sizes):
    folder = write_dataset(tmp_path, 50, 20, compress=False)
    (x_train, y_train), (x_test, y_test) = data.load_fashion_mnist(folder)
    assert x_train.shape == (50, 28, 28) and y_train.shape == (50,)
    assert x_test.shape == (20, 28, 28) and y_test.shape == (20,)


def test_wrong_count(tmp_path, small_sizes):
    folder = write_dataset(tmp_path, 49, 20)
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz: 49 images, expected 50"):
        data.load_fashion_mnist(folder)


def test_labels_do_not_match_images(tmp_path, small_sizes):
    folder = write_dataset(tmp_path, 50, 20)
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.zeros(19), 0x801)
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz: 19 labels for 20 images"):
        data.load_fashion_mnist(folder)


def test_label_out_of_range(tmp_path, small_sizes):
    folder = write_dataset(tmp_path, 50, 20)
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.full(50, 10), 0x801)
    with pytest.raises(DataError, match="label 10 out of range 0-9"):
        data.load_fashion_mnist(folder)


def test_missing_file(tmp_path, small_sizes):
    folder = write_dataset(tmp_path, 50, 20)
    (folder / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz: file not found"):
        data.load_fashion_mnist(folder)


def test_no_source_names_every_place(tmp_path, monkeypatch):
    def offline():
        raise OSError("no network")

    monkeypatch.setattr(data, "SYSTEM_DATA_DIR", tmp_path / "nowhere")
    import keras
    monkeypatch.setattr(keras.datasets.fashion_mnist, "load_data", offline)
    with pytest.raises(DataError) as error:
        data.load_fashion_mnist(None)
    message = str(error.value)
    for hint in (str(tmp_path / "nowhere"), "fashion-mnist", "apt-get install dataset-fashion-mnist",
                 "--data-dir", "online"):
        assert hint in message


def test_cli_reports_bad_data_in_one_line(tmp_path, small_sizes, capsys):
    folder = write_dataset(tmp_path / "data", 50, 20)
    write_idx(folder / "train-images-idx3-ubyte.gz", np.zeros((50, 28, 28)), 0x801)
    code = fm.main(["--data-dir", str(folder), "--output-dir", str(tmp_path / "out"),
                    "--activation", "relu", "--downsampling", "maxpool", "--optimizer", "adam"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and "wrong magic number" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_real_data():
    require_real_data()
    (x_train, y_train), (x_test, y_test) = data.load_fashion_mnist()
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert np.bincount(y_train).tolist() == [6000] * 10
    assert np.bincount(y_test).tolist() == [1000] * 10
    assert x_train.dtype == np.uint8 and x_train.max() == 255


def test_split_is_stratified_scaled_and_seeded():
    require_real_data()
    split = data.prepare_data(None, subset=2000, val_fraction=0.1, seed=3)
    (x_train, y_train), (x_val, y_val), (x_test, _) = split["train"], split["val"], split["test"]
    assert x_train.shape == (1800, 28, 28, 1) and x_val.shape == (200, 28, 28, 1)
    assert x_test.shape == (10000, 28, 28, 1)
    assert np.bincount(y_val).tolist() == [20] * 10 and np.bincount(y_train).tolist() == [180] * 10
    assert x_train.dtype == np.float32 and 0 <= x_train.min() and x_train.max() <= 1
    again = data.prepare_data(None, subset=2000, val_fraction=0.1, seed=3)
    np.testing.assert_array_equal(again["val"][0], x_val)
    other = data.prepare_data(None, subset=2000, val_fraction=0.1, seed=4)
    assert not np.array_equal(other["val"][0], x_val)


def test_data_folder_from_the_environment(tmp_path, small_sizes, monkeypatch):
    """A laptop without root: FASHION_MNIST_DIR points at the four files, no flag needed."""
    folder = write_dataset(tmp_path / "data", 50, 20)
    monkeypatch.setenv(data.DATA_DIR_VARIABLE, str(folder))
    (x_train, _), (x_test, _) = data.load_fashion_mnist()
    assert x_train.shape == (50, 28, 28) and x_test.shape == (20, 28, 28)
    monkeypatch.setenv(data.DATA_DIR_VARIABLE, str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="FASHION_MNIST_DIR is not a folder"):
        data.load_fashion_mnist()
    # --data-dir wins over the environment
    (x_train, _), _ = data.load_fashion_mnist(folder)
    assert len(x_train) == 50
