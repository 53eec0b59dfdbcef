"""Interrupted, killed or diverging: the runner loses nothing and says what happened."""

import json
import os
import signal
import subprocess
import sys
import time

from conftest import ROOT, require_real_data

import fashion_mnist_cnn as fm

ARGS = ["--subset", "1500", "--shift-images", "500", "--epochs", "3", "--activation", "relu", "--downsampling", "maxpool",
        "--optimizer", "adam"]
RUN = "runs/CNN_ReLU_MaxPool_Adam/seed0"


def start(out):
    return subprocess.Popen([sys.executable, str(ROOT / "fashion_mnist_cnn.py"), *ARGS,
                             "--output-dir", str(out)], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for_epochs(out, n, process):
    """Block until history.csv holds n finished epochs (the process must still be running)."""
    while len(fm.read_history(out / RUN / "history.csv")) < n:
        assert process.poll() is None, process.communicate()
        time.sleep(0.2)


def test_ctrl_c_then_kill_9_then_resume(tmp_path):
    require_real_data()
    out = tmp_path / "out"
    first = start(out)
    wait_for_epochs(out, 1, first)
    first.send_signal(signal.SIGINT)  # Ctrl-C during epoch 2
    _, err = first.communicate(timeout=120)
    assert first.returncode == 130
    assert "rerun the same command to resume" in err and "Traceback" not in err

    second = start(out)
    wait_for_epochs(out, 2, second)
    second.kill()  # kill -9 during epoch 3: no chance to clean up
    second.communicate(timeout=60)
    assert not (out / RUN / "metrics.json").exists()
    leftover = out / ".results.json.killed.tmp"
    leftover.write_text("half-written")

    third = subprocess.run([sys.executable, str(ROOT / "fashion_mnist_cnn.py"), *ARGS,
                            "--output-dir", str(out)], cwd=ROOT, text=True, capture_output=True,
                           timeout=600)
    assert third.returncode == 0, third.stderr[-3000:]
    # Epoch 2 was logged before the kill, so epoch 1's backup was complete: the rerun resumes
    # after it (epoch 2 itself may be redone if the kill hit while its backup was written).
    assert "Epoch 3/3" in third.stdout and "Epoch 1/3" not in third.stdout
    history = fm.read_history(out / RUN / "history.csv")
    assert [int(row["epoch"]) for row in history] == [0, 1, 2]
    rows = json.loads((out / "results.json").read_text())
    assert len(rows) == 1 and rows[0]["epochs_run"] == 3 and rows[0]["status"] == "ok"
    assert not leftover.exists()


def test_diverging_run_is_recorded_failed_and_others_go_on(tmp_path, monkeypatch, capsys):
    require_real_data()
    monkeypatch.setitem(fm.PEAK_LR, "adam", 1e9)  # absurd: Adam's loss becomes NaN
    out = tmp_path / "out"
    code = fm.main(["--subset", "300", "--shift-images", "500", "--epochs", "2", "--activation", "relu", "--downsampling",
                    "maxpool", "--output-dir", str(out)])
    assert code == 1
    assert "1 run(s) failed: CNN_ReLU_MaxPool_Adam" in capsys.readouterr().err
    rows = {r["name"]: r for r in json.loads((out / "results.json").read_text())}
    assert rows["CNN_ReLU_MaxPool_Adam"]["status"] == "failed"
    assert rows["CNN_ReLU_MaxPool_SGD"]["status"] == "ok"
    failed = json.loads((out / "runs/CNN_ReLU_MaxPool_Adam/seed0/metrics.json").read_text())
    assert "NaN" in failed["reason"]
    page = (out / "report.html").read_text()
    assert "CNN_ReLU_MaxPool_Adam" in page and "failed" in page


def test_bad_output_dir_writes_nothing(tmp_path, capsys):
    a_file = tmp_path / "results"
    a_file.write_text("not a folder")
    try:
        fm.parse_args(["--output-dir", str(a_file)])
    except SystemExit as exit_:
        assert exit_.code == 2
    assert "is a file" in capsys.readouterr().err
    assert a_file.read_text() == "not a folder"


def test_missing_data_dir_is_one_line(tmp_path, capsys):
    code = fm.main(["--data-dir", str(tmp_path / "nope"), "--output-dir", str(tmp_path / "out"),
                    "--optimizer", "adam", "--activation", "relu", "--downsampling", "maxpool"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--data-dir is not a folder" in err
    assert os.listdir(tmp_path / "out") == [] or not any((tmp_path / "out").rglob("*.json"))


def test_atomic_writes_get_the_permissions_open_would_give(tmp_path):
    """mkstemp makes 0600 files; results shared with a group must not silently be private."""
    import matplotlib.pyplot as plt
    import numpy as np

    import run_store
    import visualization_utils as viz

    umask = os.umask(0o022)
    try:
        (tmp_path / "plain.txt").write_text("x")
        expected = os.stat(tmp_path / "plain.txt").st_mode & 0o777
        run_store.atomic_write(tmp_path / "table.csv", "a,b\n")
        run_store.atomic_save_npz(tmp_path / "predictions.npz", labels=np.arange(3))
        viz.save_figure(plt.figure(), tmp_path / "figure.png")
    finally:
        os.umask(umask)
    for name in ("table.csv", "predictions.npz", "figure.png"):
        assert os.stat(tmp_path / name).st_mode & 0o777 == expected == 0o644, name
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "figure.png", "plain.txt", "predictions.npz", "table.csv"]
