"""Interrupted, killed or diverging: the runner loses nothing and says what happened."""

import json
import os
import signal
import subprocess
import sys
import time

import keras
import pytest
from conftest import ROOT, inference_accuracy, require_real_data

import fashion_mnist_cnn as fm
from fmlab.report import report
from fmlab.store import run_store
from fmlab.run.data import prepare_data

pytestmark = pytest.mark.trains  # trains models: left out of `make test-fast`

ONE = ["--activation", "relu", "--downsampling", "maxpool", "--optimizer", "adam"]
RUN = "runs/CNN_ReLU_MaxPool_Adam/seed0"
# The training techniques of the ablation, so that their state (EMA weights inside the
# optimizer, swapped in for validation) is what the kills and the resume must keep right.
TECHNIQUES = ["--label-smoothing", "0.1", "--ema", "0.9", "--translate", "2",
              "--adamw-weight-decay", "0.05"]
ARGS = ["--subset", "640", "--test-images", "512", "--shift-images", "100", "--epochs", "3",
        "--batch-size", "32", "--no-tta", "--no-report", *ONE, *TECHNIQUES]


def start(out):
    return subprocess.Popen([sys.executable, str(ROOT / "fashion_mnist_cnn.py"), *ARGS,
                             "--output-dir", str(out)], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def freeze_after_epochs(out, n, process):
    """Wait for the state "n epochs logged", then freeze the process there (SIGSTOP) and check
    that it is that state: the signal that follows lands inside epoch n + 1, however slow or
    fast the machine, instead of racing the next epoch's end."""
    while len(run_store.read_history(out / RUN / run_store.HISTORY)) < n:
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    process.send_signal(signal.SIGSTOP)
    assert len(run_store.read_history(out / RUN / run_store.HISTORY)) == n
    assert not (out / RUN / run_store.METRICS).exists()


def test_ctrl_c_then_kill_9_then_resume(tmp_path, capsys):
    """Ctrl-C in epoch 2, kill -9 in epoch 3, then the same command: the run resumes after its
    last whole backup, finishes, and evaluates a logged epoch's checkpoint -- with EMA the
    averaged weights it validated (the reloaded model reproduces that validation accuracy).
    And it is the same experiment as a run never interrupted: every epoch's training and
    validation numbers agree (the resumed epochs see the images, shifts, flips and dropout
    masks an unbroken run's do, not the first epochs' again)."""
    require_real_data()
    out = tmp_path / "out"
    first = start(out)
    freeze_after_epochs(out, 1, first)
    first.send_signal(signal.SIGINT)  # Ctrl-C during epoch 2
    first.send_signal(signal.SIGCONT)
    _, err = first.communicate(timeout=120)
    assert first.returncode == 130
    assert "rerun the same command to resume" in err and "Traceback" not in err

    second = start(out)
    freeze_after_epochs(out, 2, second)
    second.kill()  # kill -9 during epoch 3: no chance to clean up
    second.communicate(timeout=60)
    leftover = out / ".results.json.killed.tmp"
    leftover.write_text("half-written")

    capsys.readouterr()
    assert fm.main([*ARGS, "--output-dir", str(out)]) == 0  # the same command, in this process
    printed = capsys.readouterr().out
    # Epoch 2 was logged before the kill, so epoch 1's backup was complete: the rerun resumes
    # after it (epoch 2 itself may be redone if the kill hit while its backup was written).
    assert "Epoch 3/3" in printed and "Epoch 1/3" not in printed
    history = run_store.read_history(out / RUN / run_store.HISTORY)
    assert [int(row["epoch"]) for row in history] == [0, 1, 2]
    rows = json.loads((out / "results.json").read_text())
    assert len(rows) == 1 and rows[0]["epochs_run"] == 3 and rows[0]["status"] == "ok"
    assert not leftover.exists()
    record = json.loads((out / RUN / run_store.METRICS).read_text())
    assert {k: record["settings"][k] for k in ("label_smoothing", "ema", "translate",
                                               "adamw_weight_decay")} == \
        {"label_smoothing": 0.1, "ema": 0.9, "translate": 2, "adamw_weight_decay": 0.05}
    assert record["evaluation_seconds"] > 0  # recorded beside train_seconds
    model = keras.models.load_model(out / RUN / run_store.MODEL)
    assert model.optimizer.use_ema
    accuracy = inference_accuracy(model, *prepare_data(None, 640, 0.1, seed=0)["val"])
    assert accuracy == pytest.approx(history[record["best_epoch"] - 1]["val_accuracy"], abs=1e-6)
    unbroken = tmp_path / "unbroken"
    assert fm.main([*ARGS, "--output-dir", str(unbroken)]) == 0
    expected = run_store.read_history(unbroken / RUN / run_store.HISTORY)
    for resumed_row, row in zip(history, expected, strict=True):
        del resumed_row["seconds"], row["seconds"]
        assert resumed_row == pytest.approx(row, rel=1e-6), f"epoch {int(row['epoch']) + 1}"
    # another technique setting is another experiment: refused, nothing retrained
    assert fm.main([*ARGS, "--ema", "0.99", "--output-dir", str(out)]) == 2
    assert "--ema 0.9 (now 0.99)" in capsys.readouterr().err


def test_diverging_run_is_recorded_failed_and_others_go_on(tmp_path, capsys):
    require_real_data()
    out = tmp_path / "out"
    code = fm.main(["--subset", "320", "--batch-size", "32", "--test-images", "320",
                    "--shift-images", "100", "--epochs", "2", "--no-report",
                    "--activation", "relu", "--downsampling", "maxpool",
                    "--adam-peak-lr", "1e9",  # absurd: Adam's loss becomes NaN
                    "--output-dir", str(out)])
    assert code == 1
    assert "1 run(s) failed: CNN_ReLU_MaxPool_Adam" in capsys.readouterr().err
    rows = {r["name"]: r for r in json.loads((out / "results.json").read_text())}
    assert rows["CNN_ReLU_MaxPool_Adam"]["status"] == "failed"
    assert rows["CNN_ReLU_MaxPool_SGD"]["status"] == "ok"
    failed = json.loads((out / "runs/CNN_ReLU_MaxPool_Adam/seed0/metrics.json").read_text())
    assert "NaN" in failed["reason"]
    # the report lists it among the runs, marked failed, after the finished ones
    runs = run_store.finished_runs(out)
    assert [r["status"] for r in runs] == ["ok", "failed"]
    _, rows = report.results_rows(runs)
    assert rows[1][0] == "CNN_ReLU_MaxPool_Adam" and rows[1][5] == "failed"


def test_bad_output_dir_is_refused_and_left_alone(tmp_path, capsys):
    a_file = tmp_path / "results"
    a_file.write_text("not a folder")
    with pytest.raises(SystemExit) as exit_:
        fm.main(["--output-dir", str(a_file), *ONE])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.endswith(f": error: --output-dir {a_file} is a file, not a folder (see --help)\n")
    assert err.count("\n") == 1  # one line, no usage block
    assert a_file.read_text() == "not a folder"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]  # nothing else written
    capsys.readouterr()
    assert fm.main(["--output-dir", str(a_file / "inside"), *ONE]) == 2  # cannot be created
    err = capsys.readouterr().err
    assert err == f"error: {a_file / 'inside'}: --output-dir cannot be created (Not a directory)\n"
    assert a_file.read_text() == "not a folder"


def test_missing_data_dir_is_one_line(tmp_path, capsys):
    code = fm.main(["--data-dir", str(tmp_path / "nope"), "--output-dir", str(tmp_path / "out"),
                    "--optimizer", "adam", "--activation", "relu", "--downsampling", "maxpool"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--data-dir is not a folder" in err
    assert not any((tmp_path / "out").rglob("*.json"))


def test_atomic_writes_get_the_permissions_open_would_give(tmp_path):
    """mkstemp makes 0600 files; results shared with a group must not silently be private."""
    import matplotlib.pyplot as plt
    import numpy as np

    from fmlab.figures import figure_cache

    umask = os.umask(0o022)
    try:
        (tmp_path / "plain.txt").write_text("x")
        expected = os.stat(tmp_path / "plain.txt").st_mode & 0o777
        run_store.atomic_write(tmp_path / "table.csv", "a,b\n")
        run_store.atomic_save_npz(tmp_path / "predictions.npz", labels=np.arange(3))
        figure_cache.save_figure(plt.figure(), tmp_path / "figure.png")
    finally:
        os.umask(umask)
    for name in ("table.csv", "predictions.npz", "figure.png"):
        assert os.stat(tmp_path / name).st_mode & 0o777 == expected == 0o644, name
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "figure.png", "plain.txt", "predictions.npz", "table.csv"]
