"""The CLI end to end on a tiny grid of the real data: outputs, progress, resume, report, errors."""

import csv
import html
import json
import re
import shutil

import keras
import numpy as np
import pytest
from conftest import TINY_GRID, TINY_NAMES, WORKER_GRID, assert_real_png

import fashion_mnist_cnn as fm
from fmlab.report import report
from fmlab.store import run_store
from fmlab.run.data import prepare_test_images
from fmlab.run.training import predict

pytestmark = pytest.mark.trains  # trains models: left out of `make test-fast`

FIGURES = ["model_comparison.png", "per_class_accuracy.png", "factor_effects.png",
           "calibration.png", "shift_robustness.png", "dead_units.png", "claims.png"]
RUNS = [(name, seed) for seed in (0, 1) for name in TINY_NAMES]


def best_name(out):
    return json.loads((out / "results.json").read_text())[0]["name"]


def figure_paths(out):
    best = best_name(out)
    return [out / f for f in FIGURES] + [
        out / f"{best}_{kind}.png" for kind in ("confusion_matrix", "filters", "activation_maps",
                                                 "misclassified", "gradcam")]


def test_results_table_has_one_row_per_run(tiny_grid):
    out, stdout, _ = tiny_grid
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted((r["name"], int(r["seed"])) for r in rows) == sorted(RUNS)
    assert list(rows[0]) == run_store.RESULT_COLUMNS
    for row in rows:
        assert row["status"] == "ok" and row["epochs_run"] == "2"
        # 576 training images, 2 epochs: far from done, far above chance (10%)
        assert 0.3 < float(row["test_accuracy"]) < 0.95 and float(row["test_loss"]) > 0
        assert int(row["trainable_params"]) < 1_000_000
        record = json.loads((out / "runs" / row["name"] / f"seed{row['seed']}" / "metrics.json").read_text())
        assert row["device"] == record["environment"]["device"] != ""  # where it trained
    accuracies = [float(r["val_accuracy"]) for r in rows]
    assert accuracies == sorted(accuracies, reverse=True)  # best on validation first
    assert "[1/4] CNN_ReLU_MaxPool_Adam seed 0" in stdout
    assert "[4/4] CNN_ReLU_Strided_Adam seed 1 (elapsed" in stdout
    # Keras' per-epoch lines, not a redrawn progress bar, when stdout is not a terminal
    assert "Epoch 2/2" in stdout and "\r" not in stdout and "━" not in stdout


def test_the_report_is_redrawn_while_the_grid_runs(tiny_grid):
    """The first comparison is on screen after the first run, not after the grid; a kill
    during a later run leaves the report of the finished ones (up to the redraw interval,
    test_redraws_wait_for_their_interval); the last run's report is the final one."""
    _, _, drawn = tiny_grid
    progress = [p for p, _, _ in drawn]
    assert len(drawn) >= 2, "no report was drawn before the grid's end"
    assert progress[0] == (1, 4) and progress[-1] is None
    between = [done for done, total in progress[1:-1]]
    assert between == sorted(set(between)) and set(between) <= {2, 3}
    for (done, _), top, page_written in drawn[:-1]:
        assert f"Grid in progress: {done} of 4 runs finished" in top and page_written
    assert "Grid in progress" not in drawn[-1][1]


def test_redraws_wait_for_their_interval(monkeypatch):
    now, drawn = [0.0], []
    monkeypatch.setattr(fm.run_store, "finished_runs", lambda output_dir: ["runs"])
    redraw = fm.Redraw(lambda runs, progress: drawn.append(progress), "out", interval=120,
                       clock=lambda: now[0])
    for done, at in enumerate([0, 60, 121, 200, 241, 242], start=1):
        now[0] = at
        redraw(done, 8)
    assert drawn == [(1, 8), (3, 8), (5, 8)]


def test_run_folder_holds_everything(tiny_grid):
    out, _, _ = tiny_grid
    for name, seed in RUNS:
        run_dir = run_store.run_dir(out, name, seed)
        for f in (run_store.MODEL, run_store.HISTORY, run_store.METRICS, run_store.PREDICTIONS,
                  run_store.SETTINGS, run_store.FIGURE_DATA):
            assert (run_dir / f).is_file(), f
        assert any((run_dir / run_store.TENSORBOARD).rglob("events.out.tfevents*"))
        assert not (run_dir / run_store.BACKUP).exists()  # removed by Keras when fit ends
        metrics = json.loads((run_dir / run_store.METRICS).read_text())
        assert np.array(metrics["confusion_matrix"]).sum() == 1024  # --test-images 1024
        assert metrics["classification_report"]["Shirt"]["support"] == np.sum(
            np.array(metrics["confusion_matrix"])[6])
        history = run_store.read_history(run_dir / run_store.HISTORY)
        assert len(history) == 2
        assert run_store.checkpoint_epochs(run_dir) == [metrics["best_epoch"]]
        # the claims' measures: the default single learning rate, convergence from the
        # history, the generalisation gap, dying units per epoch and at the end
        assert metrics["lr_multiplier"] == 1 and metrics["peak_lr"] == metrics["settings"]["adam_peak_lr"]
        assert run_dir.parent.name == name  # the default multiplier keeps the plain folder
        assert metrics["val_accuracy_epoch1"] == history[0]["val_accuracy"]
        assert metrics["val_accuracy_epoch2"] == history[1]["val_accuracy"]
        assert metrics["generalization_gap"] == metrics["train_eval_accuracy"] - metrics["test_accuracy"]
        assert 0 < metrics["train_eval_accuracy"] <= 1 and metrics["never_positive_images"] == 64
        # every activation layer that can die: the strided convolutions' too
        downsampling = {"down1_act", "down2_act", "down3_act"} if "Strided" in name else set()
        assert set(metrics["never_positive"]) == {"act1", "act2", "act3", "act4", "dense_act",
                                                  *downsampling}
        assert all(0 <= history[-1][f"never_positive_{layer}"] <= 1
                   for layer in ("act1", "act2", "act3", "act4", "dense_act"))
        assert (metrics["downsampling_params"] == 0) == ("MaxPool" in name)


def test_saved_model_predicts_as_before_saving(tiny_grid):
    out, _, _ = tiny_grid
    run_dir = run_store.run_dir(out, TINY_NAMES[0], 0)
    model = keras.models.load_model(run_dir / run_store.MODEL)
    saved = np.load(run_dir / run_store.PREDICTIONS)
    probabilities = predict(model, prepare_test_images(None)[:1024], 256, tta=True)
    # float32 here; mixed precision (a GPU's default) rounds differently in other batch sizes
    precision = json.loads((run_dir / run_store.METRICS).read_text())["settings"]["precision"]
    np.testing.assert_allclose(probabilities, saved["probabilities"],
                               atol=1e-5 if precision == "float32" else 2e-2)


def test_figures_are_real_pngs(tiny_grid):
    out, _, _ = tiny_grid
    for path in figure_paths(out):
        assert_real_png(path)


def test_report_html_is_self_contained(tiny_grid):
    out, _, _ = tiny_grid
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == len(figure_paths(out))
    assert "http://" not in page and "https://" not in page and "<img src='figures" not in page
    for name in TINY_NAMES:
        assert name in page
    assert "precision" in page and "Ankle boot" in page and "<b>" in page and "**" not in page
    summary = (out / "summary.md").read_text()
    assert "| variant |" in summary and all(name in summary for name in TINY_NAMES)
    # a subset run says on top that it is a smoke check; its settings are a table
    assert summary.index("Smoke check of the pipeline, not results") < summary.index("Best on")
    assert "| epochs | 2 |" in summary and "| subset | 640 |" in summary
    assert "Smoke check of the pipeline" in page and "{'epochs'" not in page
    # the page and the summary are one list of sections: the same headings in the same order
    assert ([line.split(" ", 1)[1] for line in summary.splitlines() if line.startswith("#")]
            == [html.unescape(h) for h in re.findall(r"<h\d>(.*?)</h\d>", page)])


def test_rerun_skips_finished_runs(tiny_grid, capsys):
    out = tiny_grid[0]
    before = (out / "results.csv").read_text()
    assert fm.main([*TINY_GRID, "--no-report", "--output-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.count("skip ") == 4 and "Epoch" not in printed
    assert "tensorflow backend on" in printed.splitlines()[0]
    assert (out / "results.csv").read_text() == before


def test_other_settings_are_refused_not_mixed(tiny_grid, capsys):
    out, _, _ = tiny_grid
    epochs = TINY_GRID.index("--epochs") + 1
    before = (out / "results.csv").read_text()
    assert fm.main([*TINY_GRID[:epochs], "3", *TINY_GRID[epochs + 1:], "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--fresh" in err and "--epochs 2 (now 3)" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert (out / "results.csv").read_text() == before


def test_dry_run_lists_what_is_left_and_touches_nothing(tiny_grid, capsys):
    """--dry-run reads the folder as a start would: what is finished, what it would train
    (and about how long), refusing other settings alike; it trains, deletes and writes
    nothing, --fresh and --wide-sweep included."""
    out = tiny_grid[0]
    seeds = TINY_GRID.index("--seeds")
    grid = TINY_GRID[:seeds] + ["--output-dir", str(out)]
    before = sorted((p, p.stat().st_mtime_ns) for p in out.rglob("*"))
    assert fm.main([*grid, "--seeds", "0", "1", "2", "--dry-run"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[1:3] == [f"train   {name} seed 2" for name in TINY_NAMES]
    assert lines[-1].startswith("2 to train, 4 finished, about ") and "mean run time" in lines[-1]
    assert fm.main([*grid, "--seeds", "0", "1", "--dry-run", "--fresh"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("retrain ") == 4 and "4 to train, 4 of them finished (--fresh retrains" in printed
    # the sweep's first round, then the seeds at peaks it has not chosen yet
    assert fm.main([*grid, "--seeds", "0", "1", "--tune-lr", "--wide-sweep", TINY_NAMES[0],
                    "--dry-run"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("4 to train, 2 finished") and "then seed 1 at each" in last
    assert "(2 runs), once the sweep stops growing" in last
    epochs = grid.index("--epochs") + 1
    assert fm.main([*grid[:epochs], "3", *grid[epochs + 1:], "--seeds", "0", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "--epochs 2 (now 3)" in err and len(err.strip().splitlines()) == 1
    assert sorted((p, p.stat().st_mtime_ns) for p in out.rglob("*")) == before


def test_report_only_redraws_without_training_or_models(tiny_grid, tmp_path, monkeypatch, capsys):
    """A grid committed without its models, predictions, backups and figures (docs/runs)
    still gives every figure and table, the same summary, without training or loading a
    model; a figure of a run that was best before is removed; a missing figures.npz is a
    one-line error."""
    out = tmp_path / "kept"
    shutil.copytree(tiny_grid[0] / "runs", out / "runs", ignore=shutil.ignore_patterns(
        "*.keras", "predictions.npz", "backup", "tensorboard"))
    stale = out / "CNN_LeakyReLU_MaxPool_SGD_filters.png"  # of a run that was best before
    stale.write_bytes(b"png")

    def no_training(*args, **kwargs):
        raise AssertionError("--report-only must not train")

    def no_model(*args, **kwargs):
        raise AssertionError("the report loaded a model")

    monkeypatch.setattr(keras.Model, "fit", no_training)
    monkeypatch.setattr(keras.models, "load_model", no_model)
    assert fm.main(["--report-only", "--output-dir", str(out)]) == 0
    for path in figure_paths(out) + [out / "report.html", out / "summary.md"]:
        assert path.is_file(), path
    assert (out / "summary.md").read_text() == (tiny_grid[0] / "summary.md").read_text()
    assert not stale.exists() and len(list(out.glob("CNN_*_filters.png"))) == 1
    (run_store.run_dir(out, best_name(out), json.loads(
        (out / "results.json").read_text())[0]["seed"]) / run_store.FIGURE_DATA).unlink()
    capsys.readouterr()
    assert fm.main(["--report-only", "--output-dir", str(out)]) == 2  # a clear error, no traceback
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "figures.npz" in err and len(err.splitlines()) == 1


def test_every_run_keeps_the_data_of_its_model_figures(tiny_grid):
    out, _, _ = tiny_grid
    for name, seed in RUNS:
        run_dir = run_store.run_dir(out, name, seed)
        drawn = run_store.load_figure_data(run_dir)
        model = keras.models.load_model(run_dir / run_store.MODEL)
        np.testing.assert_array_equal(drawn["kernels"], model.get_layer("conv1").get_weights()[0])
        saved = np.load(run_dir / run_store.PREDICTIONS)
        predicted = saved["probabilities"].argmax(axis=1)
        mistakes = drawn["mistakes_index"]
        assert len(mistakes) > 0 and np.all(predicted[mistakes] != saved["labels"][mistakes])
        np.testing.assert_array_equal(drawn["mistakes_predicted"], predicted[mistakes])
        assert np.all(np.diff(drawn["mistakes_confidence"]) <= 0)  # most confident first
        assert drawn["gradcam_heatmaps"].shape[0] == len(drawn["gradcam_index"])
        assert drawn["map_act1"].shape == (28, 28, 32)


def test_summary_states_what_the_grid_cost(tiny_grid):
    out, _, _ = tiny_grid
    runs = [json.loads(p.read_text()) for p in out.glob("runs/*/seed*/metrics.json")]
    total = sum(r["train_seconds"] + r["evaluation_seconds"] for r in runs)
    line = next(x for x in (out / "summary.md").read_text().splitlines() if x.startswith("Compute:"))
    assert line.startswith("Compute: 4 runs,") and f"= {run_store.format_seconds(total)} one after" in line
    assert runs[0]["environment"]["device"] in line and "Per seed: seed 0 " in line


def test_compute_sentence_splits_a_multi_seed_grid_by_seed():
    env = {"device": "CPU: test (2 cores)"}
    runs = [{"seed": s, "status": "ok", "train_seconds": t, "evaluation_seconds": 60.0,
             "environment": env} for s, t in [(0, 3480.0), (0, 1800.0), (1, 7140.0)]]
    line = report.compute_sentence(runs)
    assert line.startswith("Compute: 3 runs, ") and "on CPU: test (2 cores)." in line
    assert line.endswith(f"Per seed: seed 0 {run_store.format_seconds(5400)} (2 runs), "
                         f"seed 1 {run_store.format_seconds(7200)} (1 run).")
    assert "Per seed" not in report.compute_sentence(runs[:2])  # one seed: the total says it
    # a grid resumed on another machine names both, with how many runs each trained
    runs[2]["environment"] = {"device": "CPU: other (2 cores)"}
    assert "on CPU: other (2 cores) (1 run); CPU: test (2 cores) (2 runs)." in report.compute_sentence(runs)


def test_report_only_without_runs_is_a_clear_error(tmp_path, capsys):
    assert fm.main(["--report-only", "--output-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path}: no finished runs to report\n"


def test_list_variants_trains_nothing(tmp_path, capsys):
    assert fm.main(["--list-variants", "--output-dir", str(tmp_path / "out")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 8 and all("trainable parameters" in line for line in lines)
    assert not (tmp_path / "out").exists()


def test_registered_levels_join_the_grid_by_flag(tmp_path, capsys):
    """GELU and average pooling, off by default, are one flag away: named, built, counted;
    average pooling has no parameters of its own (the max-pooling model's count)."""
    assert fm.main(["--list-variants", "--activation", "relu", "gelu", "--downsampling",
                    "maxpool", "avgpool", "--optimizer", "sgd"]) == 0
    listed = dict(line.split(maxsplit=1) for line in capsys.readouterr().out.strip().splitlines())
    assert list(listed) == ["CNN_ReLU_MaxPool_SGD", "CNN_ReLU_AvgPool_SGD",
                            "CNN_GELU_MaxPool_SGD", "CNN_GELU_AvgPool_SGD"]
    assert len(set(listed.values())) == 1  # 595,114 trainable parameters each


@pytest.mark.parametrize("argv, message", [
    (["--epochs", "0"], "must be at least 1"), (["--activation", "tanh"], "invalid choice"),
    (["--subset", "5"], "--subset must be between"), (["--val-fraction", "1.5"], "--val-fraction"),
    (["--batch-size", "many"], "not an integer"), (["--optimizer"], "expected at least one"),
    (["--lr-scale", "-1"], "must be positive"), (["--warmup-epochs", "-1"], "0 or more"),
    (["--sgd-momentum", "1"], "--sgd-momentum"), (["--test-images", "0"], "at least 1"),
    (["--report-only", "--no-report"], "nothing to be done"),
    (["--report-only", "--dry-run"], "--dry-run has nothing to show"),
    (["--lr-scales", "0", "1"], "must be positive"), (["--lr-scales", "-2"], "must be positive"),
    (["--lr-scales", "1", "2", "1"], "repeats a multiplier"),
    (["--lr-scales", "nan"], "must be positive"),
    (["--tune-lr", "--lr-scales", "1"], "at least two"),
    (["--tune-lr", "--shard", "0/2"], "in one process"),
    (["--wide-sweep", "CNN_ReLU_MaxPool_SGD"], "add --tune-lr"),
    (["--seeds", "0", "-1"], "whole numbers from 0 to 4294967295"),
    (["--seed", str(2**32)], "whole numbers from 0 to 4294967295")])
def test_bad_arguments_exit_2_with_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        fm.parse_args(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err  # no 30-line usage block above it


def test_tune_lr_with_report_only_only_reports():
    """The study's report is redrawn with the command that made it plus --report-only."""
    args = fm.parse_args(["--tune-lr", "--seeds", "0", "1", "2", "--report-only"])
    assert args.tune_lr and args.report_only == [] and args.lr_scales == [0.5, 1.0, 2.0]


def test_help_lists_every_recipe_setting(capsys):
    import dataclasses

    from fmlab.run.recipe import Recipe, flag_of

    with pytest.raises(SystemExit):
        fm.parse_args(["--help"])
    text = capsys.readouterr().out
    for field in dataclasses.fields(Recipe):
        assert flag_of(field) in text, field.name
    # the single multiplier's old name works, hidden (one letter from --lr-scales)
    assert "--peak-lr-factor F" in text and not re.search(r"--lr-scale(?!s)", text)
    assert fm.parse_args(["--lr-scale", "2"]).peak_lr_factor == 2.0 == \
        fm.parse_args(["--peak-lr-factor", "2"]).peak_lr_factor
    # the techniques that are off by default in a group of their own, after the recipe
    recipe, techniques = text.split("\nthe recipe")[1].split("\ntraining techniques, off by default")
    assert "--epochs" in recipe and "--adam-peak-lr" in recipe and "--translate" not in recipe
    for flag in ("--label-smoothing", "--ema", "--translate", "--random-erasing", "--dirac-init",
                 "--no-bn-scale", "--lookahead", "--alternating-flips"):
        assert flag in techniques.split("\nwhere and how it runs")[0], flag
    # a default shown once, where it is a value (not "None", not a switch's True/False)
    assert f"(default: {Recipe().epochs})" in " ".join(text.split())
    assert not re.search(r"\(default: (None|True|False)\)", " ".join(text.split()))
    assert not re.search(r"default[^()]*\)\s*\(default", text)


def test_same_seed_gives_same_numbers_in_any_process(two_workers, tmp_path, capsys):
    """--deterministic: a run of the job-array workers' grid, trained again in this process
    and alone, gives bit-identical numbers."""
    shared, _ = two_workers
    argv = [*WORKER_GRID[:WORKER_GRID.index("--activation")], "--activation", "leakyrelu",
            "--downsampling", "strided", "--optimizer", "sgd", "--seed", "1", "--no-report"]
    assert fm.main([*argv, "--output-dir", str(tmp_path)]) == 0
    # --no-report: the table, and the command that draws the rest later
    assert (tmp_path / "results.csv").is_file() and not (tmp_path / "report.html").exists()
    assert f"--report-only --output-dir {tmp_path}" in capsys.readouterr().out
    records = [json.loads((run_store.run_dir(d, "CNN_LeakyReLU_Strided_SGD", 1)
                           / run_store.METRICS).read_text()) for d in (shared, tmp_path)]
    for key in ("val_accuracy", "val_loss", "test_accuracy", "test_loss", "train_loss", "ece"):
        assert records[0][key] == records[1][key], key
