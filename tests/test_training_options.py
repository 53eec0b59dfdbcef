"""The training techniques of the ablation (benchmarks/ablation.py): small translations,
label smoothing, weight averaging (EMA) and AdamW's weight decay do what they say, are recorded with each run,
and keep the runner's promises -- the saved model is the one validated, kills resume."""

import json
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
from conftest import ROOT, inference_accuracy, require_real_data

import fashion_mnist_cnn as fm

ONE = ["--activation", "relu", "--downsampling", "maxpool", "--optimizer", "adam"]
RUN = "runs/CNN_ReLU_MaxPool_Adam/seed0"
TECHNIQUES = ["--label-smoothing", "0.1", "--ema", "0.9", "--translate", "2",
              "--adamw-weight-decay", "0.05"]


def shifted(image, dy, dx):
    """image moved down dy and right dx whole pixels, zeros where it came from outside."""
    out = np.zeros_like(image)
    h, w = image.shape[:2]
    out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        image[max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


def test_translations_move_whole_pixels_and_fill_with_zeros():
    rng = np.random.default_rng(0)
    images = rng.random((64, 28, 28, 1)).astype(np.float32) + 0.1  # no zeros of their own
    ds = fm.make_dataset(images, np.arange(64), batch_size=64, training=True, seed=0, translate=2)
    augmented, index = next(iter(ds))
    moves = []
    for image, i in zip(np.asarray(augmented), np.asarray(index)):
        matches = [(dy, dx) for flip in (False, True) for dy in range(-2, 3) for dx in range(-2, 3)
                   if np.array_equal(image, shifted(images[i][:, ::-1] if flip else images[i], dy, dx))]
        assert matches, f"image {i} is not a flip plus a shift of at most 2 pixels"
        moves.append(matches[0])
    assert len(set(moves)) > 5  # drawn per image, not one shift for the batch


def test_label_smoothing_trains_on_one_hot_targets():
    labels = np.array([3, 0, 9], dtype=np.int32)
    ds = fm.make_dataset(np.zeros((3, 28, 28, 1), np.float32), labels, 3, training=False, seed=0,
                         one_hot=True)
    targets = np.asarray(next(iter(ds))[1])
    np.testing.assert_array_equal(targets.argmax(axis=1), labels)
    fm.start_run(0, "float32")
    model = fm.compiled_model(fm.Variant("relu", "maxpool", "adam"), fm.tf.distribute.get_strategy(),
                              10, fm.Recipe(epochs=2, label_smoothing=0.1, ema=0.99,
                                            adamw_weight_decay=0.05))
    assert model.loss.label_smoothing == pytest.approx(0.1)
    # a confident, correct prediction still costs something: the target is not one-hot
    confident = np.eye(10, dtype=np.float32)[labels] * 0.999 + 0.0001
    assert float(model.loss(targets, confident)) > 0.2
    assert model.optimizer.use_ema and model.optimizer.ema_momentum == pytest.approx(0.99)
    assert model.optimizer.weight_decay == pytest.approx(0.05)


def test_a_run_with_the_techniques_saves_the_model_it_validated(tmp_path, capsys):
    """With EMA the averaged weights are validated and checkpointed (batch norm statistics
    recomputed for them): the saved model reproduces the logged validation accuracy."""
    require_real_data()
    out = tmp_path / "out"
    argv = ["--subset", "1000", "--shift-images", "500", "--epochs", "2", "--batch-size", "64",
            "--no-tta", *ONE, *TECHNIQUES, "--output-dir", str(out)]
    assert fm.main(argv) == 0
    record = json.loads((out / RUN / "metrics.json").read_text())
    assert {k: record["settings"][k] for k in ("label_smoothing", "ema", "translate",
                                               "adamw_weight_decay")} == \
        {"label_smoothing": 0.1, "ema": 0.9, "translate": 2, "adamw_weight_decay": 0.05}
    assert record["evaluation_seconds"] > 0  # recorded beside train_seconds
    model = keras.models.load_model(out / RUN / "model.keras")
    assert model.optimizer.use_ema
    accuracy = inference_accuracy(model, *fm.prepare_data(None, 1000, 0.1, seed=0)["val"])
    assert accuracy == pytest.approx(record["val_accuracy"], abs=1e-6)
    # another technique setting is another experiment: refused, nothing retrained
    capsys.readouterr()
    assert fm.main([*argv[:-2], "--output-dir", str(out), "--ema", "0.99"]) == 2
    assert "--ema 0.9 (now 0.99)" in capsys.readouterr().err


def test_a_killed_ema_run_resumes_and_evaluates_a_logged_epoch(tmp_path):
    """Killed after its second epoch, the run resumes at the third; the evaluated checkpoint
    reproduces the validation accuracy logged for its epoch."""
    require_real_data()
    out = tmp_path / "out"
    argv = [sys.executable, str(ROOT / "fashion_mnist_cnn.py"), "--subset", "1000",
            "--shift-images", "500", "--epochs", "4", "--batch-size", "64", "--no-tta", *ONE,
            *TECHNIQUES, "--output-dir", str(out)]
    history_path = out / RUN / "history.csv"
    process = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while process.poll() is None and len(fm.read_history(history_path) if history_path.exists() else []) < 2:
            time.sleep(0.2)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    assert not (out / RUN / "metrics.json").exists(), "finished before it could be killed"
    rerun = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    history = fm.read_history(history_path)
    assert [int(r["epoch"]) for r in history] == [0, 1, 2, 3]
    assert "Epoch 1/4" not in rerun.stdout  # resumed, not restarted
    record = json.loads((out / RUN / "metrics.json").read_text())
    model = keras.models.load_model(out / RUN / "model.keras")
    accuracy = inference_accuracy(model, *fm.prepare_data(None, 1000, 0.1, seed=0)["val"])
    assert accuracy == pytest.approx(history[record["best_epoch"] - 1]["val_accuracy"], abs=1e-6)


def test_runs_from_before_the_recorded_peaks_are_told_apart():
    """AdamW's default peak went from 2e-3 to 4e-3: a run made before the peaks were recorded
    reads as 2e-3 x its --lr-scale, and is refused beside a run with today's default."""
    old = {"settings": {"epochs": 12, "lr_scale": 2.0}}
    assert fm.settings_of(old)["adam_peak_lr"] == pytest.approx(4e-3)
    assert fm.settings_of(old)["sgd_peak_lr"] == pytest.approx(0.1)
    now = fm.run_settings(fm.parse_args([]))
    assert now["adam_peak_lr"] == fm.PEAK_LR["adam"] and now["sgd_peak_lr"] == fm.PEAK_LR["sgd"]
    recorded = {k: v for k, v in now.items() if k not in ("adam_peak_lr", "sgd_peak_lr")}
    with pytest.raises(fm.UsageError, match=r"--adam-peak-lr 0.002 \(now 0.004\)"):
        fm.check_same_settings(recorded, now, "old run")
