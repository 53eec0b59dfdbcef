"""The learning rate as a grid axis with real runs: a run per multiplier in a folder of its
own, skipped when finished, resumed at its multiplier, merged from shard folders; and the
tuning protocol's stages (with training replaced by a stand-in)."""

import csv
import dataclasses
import json
import math
import shutil

import pytest
from conftest import assert_real_png, require_real_data

import fashion_mnist_cnn as fm
from fmlab.run import grid
from fmlab.stats import lr_tuning
from fmlab.store import run_store
from fmlab.core.errors import UsageError
from fmlab.run.variants import Variant
from fmlab.run.recipe import recipe_for

pytestmark = pytest.mark.trains  # trains models: left out of `make test-fast`

SWEEP = ["--subset", "320", "--test-images", "512", "--shift-images", "100", "--epochs", "1",
         "--batch-size", "32", "--no-tta", "--activation", "relu", "--downsampling", "maxpool",
         "--optimizer", "adam", "--seeds", "0", "--lr-scales", "0.5", "1"]
NAME = "CNN_ReLU_MaxPool_Adam"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    require_real_data()
    out = tmp_path_factory.mktemp("sweep") / "out"
    # the report once, from the finished runs (redraws during a grid: tests/test_cli.py)
    assert fm.main([*SWEEP, "--no-report", "--output-dir", str(out)]) == 0
    assert fm.main(["--report-only", "--output-dir", str(out)]) == 0
    return out


def test_each_multiplier_is_a_run_of_its_own(sweep):
    plain, half = run_store.run_dir(sweep, NAME, 0), run_store.run_dir(sweep, NAME, 0, 0.5)
    assert plain.parent.name == NAME and half.parent.name == f"{NAME}_lrx0.5"
    records = [json.loads((d / run_store.METRICS).read_text()) for d in (plain, half)]
    assert [r["lr_multiplier"] for r in records] == [1.0, 0.5]
    peak = records[0]["settings"]["adam_peak_lr"]  # one recipe for the grid, the peak per run
    assert [r["peak_lr"] for r in records] == [peak, peak / 2]
    assert records[0]["settings"] == records[1]["settings"]
    with open(sweep / "results.csv") as f:
        assert sorted(float(r["lr_multiplier"]) for r in csv.DictReader(f)) == [0.5, 1.0]
    summary = (sweep / "summary.md").read_text()
    assert "## Learning rate, tuned per variant" in summary and "x0.5: " in summary
    assert f"the peak rule's: {lr_tuning.PEAK_RULE_WORDS[lr_tuning.PEAK_RULE]}" in summary
    pixels = assert_real_png(sweep / "lr_sensitivity.png")
    assert pixels.shape[1] < 1.6 * pixels.shape[0]  # one optimizer swept: one panel, not two
    best = max(records, key=lambda r: (r["val_accuracy"], -abs(r["lr_multiplier"] - 1)))
    chosen = f"x{best['lr_multiplier']:g} ({best['peak_lr']:.3g})"
    assert f"| {NAME} | " in summary and chosen in summary  # picked on validation
    assert "| 2 points x 1 seed; 2 runs |" in summary  # the budget, counted
    where = f"seed 0, lr x{best['lr_multiplier']:g}" if best["lr_multiplier"] != 1 else "seed 0"
    assert f"Best on validation: **{NAME}** ({where})" in summary  # names the sweep point
    settings = summary[summary.index("## Settings"):summary.index("## Runs")]
    assert (f"| this run's peak learning rate | {best['peak_lr']:g} "
            f"(x{best['lr_multiplier']:g} of the recipe's peak) |") in settings  # not the grid's
    assert "Each variant at its tuned peak learning rate" in summary  # the comparison says so
    # the answers first, what they rest on next, the settings as reference
    assert summary.index("## Variants over seeds") < \
        summary.index("## Learning rate, tuned per variant") < summary.index("## Settings")


def test_a_rerun_skips_every_finished_multiplier(sweep, capsys):
    assert fm.main([*SWEEP, "--no-report", "--output-dir", str(sweep)]) == 0
    out = capsys.readouterr().out
    assert f"skip {NAME} (lr x0.5) seed 0: finished" in out and f"skip {NAME} seed 0: finished" in out
    assert "[1/" not in out


def test_an_interrupted_run_resumes_at_its_multiplier(sweep, tmp_path, capsys):
    """Killed after training, before its record: the rerun evaluates the x0.5 run's own
    checkpoint, in its own folder, and trains nothing."""
    out = shutil.copytree(sweep, tmp_path / "out")
    half = run_store.run_dir(out, NAME, 0, 0.5)
    before = json.loads((half / run_store.METRICS).read_text())
    (half / run_store.METRICS).unlink()
    assert fm.main([*SWEEP, "--no-report", "--output-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"[1/1] {NAME} (lr x0.5) seed 0" in printed and "Epoch 1/1" not in printed
    after = json.loads((half / run_store.METRICS).read_text())
    for key in ("lr_multiplier", "peak_lr", "val_accuracy", "test_accuracy", "best_epoch"):
        assert after[key] == before[key], key


def test_shard_folders_of_a_sweep_merge(sweep, tmp_path):
    """Each multiplier's run in a folder of its own (as two shards would leave them): the
    merged report has both and the sensitivity figure; a conflicting copy is refused."""
    shards = [tmp_path / "shard0", tmp_path / "shard1"]
    for folder, multiplier in zip(shards, (1.0, 0.5)):
        shutil.copytree(run_store.run_dir(sweep, NAME, 0, multiplier),
                        run_store.run_dir(folder, NAME, 0, multiplier))
    merged = tmp_path / "merged"
    assert fm.main(["--report-only", *map(str, shards), "--output-dir", str(merged)]) == 0
    assert (merged / "lr_sensitivity.png").is_file()
    with open(merged / "results.csv") as f, open(sweep / "results.csv") as g:
        assert sorted(map(tuple, map(dict.items, csv.DictReader(f)))) == \
            sorted(map(tuple, map(dict.items, csv.DictReader(g))))
    assert len(run_store.merged_runs([sweep, *shards])) == 2  # same runs twice: kept once


def test_tune_lr_sweeps_extends_then_repeats_the_chosen_point(tmp_path, monkeypatch, capsys):
    """The protocol's stages with a stand-in for training whose validation accuracy peaks
    at x4: the sweep 0.5-2 grows to x4 and x8 (best at its top edge until x4 is inside),
    then seeds 1 and 2 run at x4 only. Every variant's x1 trains first, then the points
    nearest x1 (a stopped study holds the plain grid of its first seed)."""
    out = tmp_path / "out"
    trained = []

    def fake_run_grid(planned, recipe, context, after_each_run=None):
        for variant, seed, multiplier in planned:
            folder = run_store.run_dir(context.output_dir, variant.name, seed, multiplier)
            if (folder / run_store.METRICS).exists():
                continue
            trained.append((variant.optimizer, seed, multiplier))
            folder.mkdir(parents=True)
            run_store.write_metrics(folder, {
                "name": variant.name, "seed": seed, "lr_multiplier": multiplier, "status": "ok",
                "val_accuracy": 0.9 - (math.log2(multiplier) - 2) ** 2 / 100})
        return []

    monkeypatch.setattr(grid, "run_grid", fake_run_grid)
    context = grid.Context(out)
    failed = grid.tune_learning_rates([Variant("relu", "maxpool", "sgd"),
                                     Variant("relu", "maxpool", "adam")], [0, 1, 2],
                                    [0.5, 1.0, 2.0], None, context)
    assert failed == []
    rounds = [line for line in capsys.readouterr().out.splitlines() if "learning-rate sweep" in line]
    assert rounds == [f"learning-rate sweep on seed 0, round {k}: {n} points, {new} to train; then "
                      "seeds 1, 2 at each variant's chosen peak (4 runs)"
                      for k, n, new in ((1, 6, 6), (2, 8, 2), (3, 10, 2))]
    assert trained[:6] == [("sgd", 0, 1.0), ("adam", 0, 1.0), ("sgd", 0, 0.5), ("sgd", 0, 2.0),
                           ("adam", 0, 0.5), ("adam", 0, 2.0)]
    for optimizer in ("sgd", "adam"):
        assert [(s, m) for o, s, m in trained if o == optimizer] == [
            (0, 1.0), (0, 0.5), (0, 2.0), (0, 4.0), (0, 8.0), (1, 4.0), (2, 4.0)]


def test_a_study_keeps_the_variants_it_sweeps_wide(tmp_path, monkeypatch, capsys):
    """--wide-sweep is recorded with the folder: the named variants' sweeps grow, the others
    keep their starting points, a resume without the flag keeps the choice, and another
    choice, an unknown name or a late one for a sweep already begun is one line and exit 2.
    The runner's own `run` wires the flag to the sweep; only the training is a stand-in."""
    trained = []

    def fake_run_grid(planned, recipe, context, after_each_run=None):
        for variant, seed, multiplier in planned:
            folder = run_store.run_dir(context.output_dir, variant.name, seed, multiplier)
            if not (folder / run_store.METRICS).exists():
                trained.append((variant.name, seed, multiplier))
                folder.mkdir(parents=True)
                run_store.write_metrics(folder, {
                    "name": variant.name, "seed": seed, "lr_multiplier": multiplier,
                    "status": "ok", "val_accuracy": 0.9 - abs(multiplier - 4) / 100,
                    "trainable_params": 1, "epochs_run": 1, "test_accuracy": 0.9,
                    "test_loss": 0.3, "train_seconds": 1.0,
                    "settings": dataclasses.asdict(recipe_for(recipe, variant))})
        return []

    monkeypatch.setattr(grid, "run_grid", fake_run_grid)
    out = tmp_path / "study"
    out.mkdir()
    command = ["--activation", "relu", "--optimizer", "sgd", "--tune-lr", "--seeds", "0", "1",
               "--no-report", "--output-dir", str(out)]
    assert fm.main(command + ["--wide-sweep", "CNN_ReLU_Strided_SGD"]) == 0
    assert run_store.read_wide_sweep(out) == ["CNN_ReLU_Strided_SGD"]
    swept = {name: sorted(m for n, s, m in trained if n == name and s == 0)
             for name in ("CNN_ReLU_MaxPool_SGD", "CNN_ReLU_Strided_SGD")}
    assert swept == {"CNN_ReLU_MaxPool_SGD": [0.5, 1.0, 2.0],
                     "CNN_ReLU_Strided_SGD": [0.5, 1.0, 2.0, 4.0, 8.0]}
    trained.clear()
    assert fm.main(command) == 0 and trained == []  # resumed without the flag: nothing new
    # a finished sweep: a dry run names the next seed's runs at the chosen peaks
    capsys.readouterr()
    seeds = command.index("--seeds")
    assert fm.main(command[:seeds + 3] + ["2"] + command[seeds + 3:] + ["--dry-run"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    chosen = lr_tuning.chosen_multipliers(run_store.finished_runs(out))
    assert lines[1:-1] == [f"train   {grid.label(Variant('relu', d, 'sgd'), chosen[name])} seed 2"
                           for d, name in (("maxpool", "CNN_ReLU_MaxPool_SGD"),
                                           ("strided", "CNN_ReLU_Strided_SGD"))]
    assert lines[-1].startswith("2 to train, 10 finished, about 0m02s") and trained == []
    for flags, message in [(["--wide-sweep", "CNN_ReLU_MaxPool_SGD"], "one folder, one protocol"),
                           (["--wide-sweep", "CNN_Tanh"], "not a variant of this grid")]:
        capsys.readouterr()
        assert fm.main(command + flags) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1
    (out / run_store.TUNING).unlink()  # a sweep begun for every variant
    assert fm.main(command + ["--wide-sweep", "CNN_ReLU_Strided_SGD"]) == 2
    assert "sweep begun for every variant" in capsys.readouterr().err


@pytest.mark.parametrize("diverged", [False, True])
def test_lr_sensitivity_keeps_every_point_on_its_shared_scale(tmp_path, monkeypatch, diverged):
    """The panels share one accuracy scale: the best point of either panel, and its star,
    stay inside it, whichever panel is drawn first; so does a diverged run's cross."""
    from fmlab.figures import plots as visualization_utils

    figures = []
    monkeypatch.setattr(visualization_utils, "save_figure",
                        lambda fig, path: figures.append(fig) or path)
    adam = dict(activation="relu", downsampling="maxpool", optimizer="adam")
    sgd = dict(activation="leakyrelu", downsampling="strided", optimizer="sgd")
    curves = [(adam, "Adam", [(0.5, 0.003, 0.925), (1, 0.006, 0.932), (2, 0.012, 0.930)], 1),
              (sgd, "SGD", [(0.5, 0.0375, 0.931), (1, 0.075, 0.933), (2, 0.15, 0.9377)], 2)]
    if diverged:
        curves[1][2].append((4, 0.3, None))
    visualization_utils.plot_lr_sensitivity(curves, tmp_path / "lr.png")
    (fig,) = figures
    for ax in fig.axes:
        low, high = ax.get_ylim()
        for line in ax.get_lines():
            if line.get_transform() is not ax.transData:  # the recipe's peak, a vertical line
                continue
            ys = list(line.get_ydata())
            assert all(low < y < high for y in ys), (ax.get_title(), ys, (low, high))
    assert max(y for ax in fig.axes for line in ax.get_lines() for y in line.get_ydata()
               if line.get_transform() is ax.transData) >= 93.77 - 1e-9


def test_a_merged_report_carries_the_folders_sweep_protocol(tmp_path):
    """--report-only DIR ... --output-dir OUT: OUT's report states the wide-sweep choice the
    folders recorded; folders that disagree are refused in one line; none recorded, none added."""
    shards = [tmp_path / "a", tmp_path / "b"]
    for folder in shards:
        folder.mkdir()
        run_store.record_wide_sweep(folder, ["CNN_ReLU_MaxPool_SGD"])
    out = tmp_path / "out"
    out.mkdir()
    run_store.carry_wide_sweep(shards, out)
    assert run_store.read_wide_sweep(out) == ["CNN_ReLU_MaxPool_SGD"]
    run_store.record_wide_sweep(shards[1], ["CNN_ReLU_Strided_SGD"])
    with pytest.raises(UsageError, match="swept different variants wide"):
        run_store.carry_wide_sweep(shards, tmp_path / "elsewhere")
    with pytest.raises(UsageError, match="swept different variants wide"):  # OUT's own record
        run_store.carry_wide_sweep([shards[1]], out)
    plain = tmp_path / "plain"
    plain.mkdir()
    run_store.carry_wide_sweep([plain], tmp_path)
    assert run_store.read_wide_sweep(tmp_path) is None


def test_lr_sensitivity_names_each_optimizer_from_its_registry_entry(monkeypatch):
    """A panel's title is its optimizer's registered name: a level added in levels.py is
    not drawn under another optimizer's name."""
    from fmlab.core import levels
    from fmlab.figures import plots as visualization_utils

    figures = []
    monkeypatch.setattr(visualization_utils, "save_figure",
                        lambda fig, path: figures.append(fig) or path)
    monkeypatch.setitem(levels.LEVELS["optimizer"], "rmsprop",
                        levels.Level("rmsprop", "RMSprop", None, "#2ca02c"))
    monkeypatch.setitem(visualization_utils.OPTIMIZER_COLOR, "rmsprop", "#2ca02c")
    curves = [(dict(activation="relu", downsampling="maxpool", optimizer=name), name,
               [(0.5, 0.01, 0.92), (1, 0.02, 0.93)], 1) for name in ("sgd", "rmsprop")]
    visualization_utils.plot_lr_sensitivity(curves, "unused.png")
    (fig,) = figures
    titles = [ax.get_title().split(":")[0] for ax in fig.axes]
    assert titles == ["SGD with Nesterov momentum", "RMSprop"]
