"""The CLI end to end on a tiny subset of the real data: outputs, resume, report, errors."""

import csv
import json
import os
import shutil
import subprocess
import sys

import keras
import matplotlib.image
import numpy as np
import pytest
from conftest import ROOT, require_real_data

import fashion_mnist_cnn as fm

TINY = ["--subset", "400", "--shift-images", "500", "--epochs", "2", "--batch-size", "64",
        "--activation", "relu", "--downsampling", "maxpool", "strided", "--optimizer", "adam"]
NAMES = ["CNN_ReLU_MaxPool_Adam", "CNN_ReLU_Strided_Adam"]
FIGURES = ["model_comparison.png", "per_class_accuracy.png", "factor_effects.png",
           "calibration.png", "shift_robustness.png"]


def run_cli(*args):
    return subprocess.run([sys.executable, str(ROOT / "fashion_mnist_cnn.py"), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=600,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One real two-variant run through the CLI, shared by the tests below."""
    require_real_data()
    out = tmp_path_factory.mktemp("tiny")
    result = run_cli(*TINY, "--output-dir", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result


def best_name(out):
    return json.loads((out / "results.json").read_text())[0]["name"]


def figure_paths(out):
    best = best_name(out)
    return [out / f for f in FIGURES] + [
        out / f"{best}_{kind}.png" for kind in ("confusion_matrix", "filters", "activation_maps",
                                                 "misclassified", "gradcam")]


def test_results_table_has_one_row_per_run(tiny_run):
    out, result = tiny_run
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["name"] for r in rows) == NAMES
    assert set(fm.RESULT_COLUMNS) <= set(rows[0])
    for row in rows:
        assert row["status"] == "ok" and row["epochs_run"] == "2" and row["seed"] == "0"
        assert 0 <= float(row["test_accuracy"]) <= 1 and float(row["test_loss"]) > 0
        assert int(row["trainable_params"]) < 1_000_000
    assert json.loads((out / "results.json").read_text())[0]["val_accuracy"] >= float(rows[1]["val_accuracy"])
    assert "[1/2] CNN_ReLU_MaxPool_Adam seed 0" in result.stdout
    assert "[2/2] CNN_ReLU_Strided_Adam seed 0 (elapsed" in result.stdout
    # Keras' per-epoch lines, not a redrawn progress bar, when stdout is not a terminal
    assert "Epoch 2/2" in result.stdout and "\r" not in result.stdout and "━" not in result.stdout


def test_run_folder_holds_everything(tiny_run):
    out, _ = tiny_run
    for name in NAMES:
        run_dir = out / "runs" / name / "seed0"
        for f in ("model.keras", "history.csv", "metrics.json", "predictions.npz"):
            assert (run_dir / f).is_file(), f
        assert any((run_dir / "tensorboard").rglob("events.out.tfevents*"))
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert np.array(metrics["confusion_matrix"]).sum() == 10000
        assert "Shirt" in metrics["classification_report"]
        assert len(fm.read_history(run_dir / "history.csv")) == 2


def test_saved_model_predicts_as_before_saving(tiny_run):
    out, _ = tiny_run
    run_dir = out / "runs" / NAMES[0] / "seed0"
    model = keras.models.load_model(run_dir / "model.keras")
    saved = np.load(run_dir / "predictions.npz")
    x_test = fm.prepare_test_images(None)
    probabilities = fm.predict(model, x_test, 256, tta=True)
    # float32 here; mixed precision (a GPU's default) rounds differently in other batch sizes
    precision = json.loads((run_dir / "metrics.json").read_text())["settings"]["precision"]
    np.testing.assert_allclose(probabilities, saved["probabilities"],
                               atol=1e-5 if precision == "float32" else 2e-2)


def test_figures_are_real_pngs(tiny_run):
    out, _ = tiny_run
    for path in figure_paths(out):
        assert path.stat().st_size > 20_000, path
        pixels = matplotlib.image.imread(path)
        assert pixels.shape[0] > 400 and pixels.shape[1] > 400
        assert pixels[..., :3].std() > 0.05, f"{path} looks blank"


def test_report_html_is_self_contained(tiny_run):
    out, _ = tiny_run
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == len(figure_paths(out))
    assert "http://" not in page and "https://" not in page and "<img src='figures" not in page
    for name in NAMES:
        assert name in page
    assert "precision" in page and "Ankle boot" in page
    summary = (out / "summary.md").read_text()
    assert "| variant |" in summary and all(name in summary for name in NAMES)
    # a subset run says on top that it is a smoke check; its settings are a table
    assert summary.index("Smoke check of the pipeline, not results") < summary.index("Best on")
    assert "| epochs | 2 |" in summary and "| subset | 400 |" in summary
    assert "Smoke check of the pipeline" in page and "{'epochs'" not in page


def test_rerun_skips_finished_runs(tiny_run):
    out, _ = tiny_run
    result = run_cli(*TINY, "--output-dir", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("skip ") == 2 and "Epoch" not in result.stdout


def test_other_settings_are_refused_not_mixed(tiny_run):
    out, _ = tiny_run
    result = run_cli(*TINY[:5], "3", *TINY[6:], "--output-dir", str(out))  # --epochs 3
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "--fresh" in result.stderr
    assert "Traceback" not in result.stderr


def test_report_only_redraws_without_training(tiny_run, monkeypatch):
    out, _ = tiny_run
    for path in figure_paths(out) + [out / "report.html"]:
        path.unlink()

    def no_training(*args, **kwargs):
        raise AssertionError("--report-only must not train")

    monkeypatch.setattr(keras.Model, "fit", no_training)
    assert fm.main(["--report-only", "--output-dir", str(out)]) == 0
    for path in figure_paths(out) + [out / "report.html"]:
        assert path.is_file(), path


def test_every_run_keeps_the_data_of_its_model_figures(tiny_run):
    out, _ = tiny_run
    for name in NAMES:
        run_dir = out / "runs" / name / "seed0"
        drawn = np.load(run_dir / "figures.npz")
        model = keras.models.load_model(run_dir / "model.keras")
        np.testing.assert_array_equal(drawn["kernels"], model.get_layer("conv1").get_weights()[0])
        saved = np.load(run_dir / "predictions.npz")
        predicted = saved["probabilities"].argmax(axis=1)
        mistakes = drawn["mistakes_index"]
        assert len(mistakes) > 0 and np.all(predicted[mistakes] != saved["labels"][mistakes])
        np.testing.assert_array_equal(drawn["mistakes_predicted"], predicted[mistakes])
        assert np.all(np.diff(drawn["mistakes_confidence"]) <= 0)  # most confident first
        assert drawn["gradcam_heatmaps"].shape[0] == len(drawn["gradcam_index"])
        assert drawn["map_act1"].shape == (28, 28, 32)


def test_report_of_runs_kept_without_models(tiny_run, tmp_path, monkeypatch):
    """A grid committed without its models, predictions and backups (docs/runs) still
    gives every figure and table."""
    out, _ = tiny_run
    kept = tmp_path / "kept"
    shutil.copytree(out / "runs", kept / "runs", ignore=shutil.ignore_patterns(
        "*.keras", "predictions.npz", "backup", "tensorboard"))

    def no_model(*args, **kwargs):
        raise AssertionError("the report loaded a model")

    monkeypatch.setattr(keras.models, "load_model", no_model)
    assert fm.main(["--report-only", "--output-dir", str(kept)]) == 0
    for path in figure_paths(kept) + [kept / "report.html", kept / "summary.md"]:
        assert path.is_file(), path
    (kept / "runs" / best_name(kept) / "seed0" / "figures.npz").unlink()
    assert fm.main(["--report-only", "--output-dir", str(kept)]) == 2  # a clear error, no traceback


def test_summary_states_what_the_grid_cost(tiny_run):
    out, _ = tiny_run
    runs = [json.loads(p.read_text()) for p in out.glob("runs/*/seed0/metrics.json")]
    total = sum(r["train_seconds"] + r["evaluation_seconds"] for r in runs)
    line = next(x for x in (out / "summary.md").read_text().splitlines() if x.startswith("Compute:"))
    assert line.startswith("Compute: 2 runs,") and f"= {fm.format_seconds(total)} one after" in line
    assert runs[0]["environment"]["device"] in line


def test_compute_sentence_splits_a_multi_seed_grid_by_seed():
    import report

    env = {"device": "CPU: test (2 cores)"}
    runs = [{"seed": s, "status": "ok", "train_seconds": t, "evaluation_seconds": 60.0,
             "environment": env} for s, t in [(0, 3480.0), (0, 1800.0), (1, 7140.0)]]
    line = report.compute_sentence(runs)
    assert line.startswith("Compute: 3 runs, ") and "on CPU: test (2 cores)." in line
    assert line.endswith(f"Per seed: seed 0 {fm.format_seconds(5400)} (2 runs), "
                         f"seed 1 {fm.format_seconds(7200)} (1 run).")
    assert "Per seed" not in report.compute_sentence(runs[:2])  # one seed: the total says it


def test_report_only_without_runs_is_a_clear_error(tmp_path, capsys):
    assert fm.main(["--report-only", "--output-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_list_variants_trains_nothing(tmp_path, capsys):
    assert fm.main(["--list-variants", "--output-dir", str(tmp_path / "out")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 8 and all("trainable parameters" in line for line in lines)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv", [["--epochs", "0"], ["--activation", "tanh"], ["--subset", "5"],
                                  ["--val-fraction", "1.5"], ["--batch-size", "many"],
                                  ["--optimizer"], ["--lr-scale", "-1"]])
def test_bad_arguments_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        fm.parse_args(argv)
    assert exit_.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_same_seed_gives_same_numbers(tmp_path):
    require_real_data()
    argv = ["--subset", "300", "--shift-images", "500", "--epochs", "1", "--activation", "leakyrelu", "--downsampling",
            "strided", "--optimizer", "sgd", "--deterministic"]
    records = []
    for out in (tmp_path / "a", tmp_path / "b"):
        assert fm.main([*argv, "--output-dir", str(out)]) == 0
        records.append(json.loads((out / "runs/CNN_LeakyReLU_Strided_SGD/seed0/metrics.json").read_text()))
    for key in ("val_accuracy", "val_loss", "test_accuracy", "test_loss", "train_loss"):
        assert records[0][key] == records[1][key], key
