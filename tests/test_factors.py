"""Any setting a factor of the design: the registry's invariants, --factor on the command line,
records from before a factor existed, k-factor effects and a claim x factor interaction
against values computed by hand, and a 4-factor grid end to end."""

import dataclasses
import inspect
import itertools
import json

import numpy as np
import pytest
from scipy import stats
from conftest import write_dataset

import fashion_mnist_cnn as fm
from fmlab.run.recipe import recipe_for
from fmlab.core import levels
from fmlab.core.errors import UsageError
from fmlab.run import models
from fmlab.run.variants import Variant, variant_grid
from fmlab.run.recipe import Recipe
from fmlab.stats import claims, claims_by_factor, factorial
from fmlab.store import run_store

# Keys every settings.json holds (the recipe's first fields); any later field needs a backfill
FIRST_SETTINGS = {"epochs": 32, "batch_size": 128, "subset": None, "val_fraction": 0.1,
                  "precision": "float32", "tta": True, "lr_scale": 1.0}  # (peak_lr_factor's old name)


def test_level_names_are_unique_and_checked(monkeypatch):
    levels.check_unique_level_names()
    monkeypatch.setitem(levels.LEVELS, "pooling_twin", {"maxpool": levels.LEVELS["downsampling"]["maxpool"]})
    with pytest.raises(ValueError, match="'maxpool' is registered for both downsampling and pooling_twin"):
        levels.check_unique_level_names()


def test_each_factor_default_is_the_model_and_recipe_default():
    keywords = inspect.signature(models._build).parameters
    for part, default in levels.DEFAULT_LEVEL.items():
        if part in levels.MODEL_PARTS:  # the first level builds the model as build_model does
            assert levels.MODEL_PARTS[part][default].build == keywords[part].default, part
    for field in dataclasses.fields(Recipe):
        if field.metadata["cli"].get("flag", "") is None:
            continue
        fm.parse_args(["--factor", f"{field.name}={levels.format_value(field.default)}"]
                      if field.default is not None else [])
        if field.default is not None:
            assert levels.DEFAULT_LEVEL[field.name] == f"{field.name}={levels.format_value(field.default)}"


def test_every_recipe_setting_has_a_backfill_for_old_records():
    settings = run_store.settings_of({"settings": dict(FIRST_SETTINGS)})
    missing = [f.name for f in dataclasses.fields(Recipe) if f.name not in settings]
    assert not missing, f"settings_of gives old records no value for {missing}"


def test_the_grid_is_the_product_of_every_factor():
    args = fm.parse_args(["--factor", "epochs=8,32", "--factor", "batchnorm=bn,nobn"])
    assert args.factors == {"epochs": ["epochs=8", "epochs=32"], "batchnorm": ["bn", "nobn"]}
    grid = variant_grid(args.activation, args.downsampling, args.optimizer, args.factors)
    names = [v.name for v in grid]
    assert len(names) == len(set(names)) == 32
    assert "CNN_ReLU_MaxPool_Adam" in names  # every default level: the seed's name
    assert "CNN_LeakyReLU_Strided_SGD_NoBN_epochs8" in names  # model parts first, then settings
    eight = next(v for v in grid if v.name == "CNN_ReLU_MaxPool_Adam_epochs8")
    assert eight.settings() == {"epochs": 8} and eight.parts() == {"batchnorm": True}
    assert recipe_for(Recipe(), eight).epochs == 8
    scaled = Variant("relu", "maxpool", "sgd", (("peak_lr_factor", levels.register_setting_factor(
        "peak_lr_factor", [1.0, 2.0], 1.0)[1]),))
    assert recipe_for(Recipe(), scaled).sgd_peak_lr == pytest.approx(2 * Recipe().sgd_peak_lr)


@pytest.mark.parametrize("argv, message", [
    (["--factor", "foo=1,2"], "--factor foo: no such recipe setting or model part"),
    (["--factor", "batchnorm=bn,off"], "--factor batchnorm: unknown level 'off' (known: bn, nobn)"),
    (["--epochs", "8", "--factor", "epochs=8,32"], "--factor epochs and --epochs both set epochs"),
    (["--factor", "epochs=8", "--factor", "epochs=32"], "--factor epochs is given twice"),
    (["--factor", "batch-size=64", "--factor", "batch_size=32"], "--factor batch_size is given twice"),
    (["--factor", "epochs=8,8"], "--factor epochs repeats a level"),
    (["--factor", "optimizer=adam"], "--factor optimizer: the design's own choices have their flag"),
    (["--factor", "val_fraction=0.1,2"], "--val-fraction must be between 0 and 1"),
    (["--factor", "epochs"], "write NAME=LEVEL,LEVEL"),
])
def test_a_bad_factor_is_one_line_and_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as stop:
        fm.parse_args(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert message in err


def record(name_levels, settings=None, **more):
    a, d, o = name_levels
    return {"name": levels.variant_name(name_levels), "activation": a, "downsampling": d,
            "optimizer": o, "seed": 0, "status": "ok", "run_dir": "x",
            "settings": {**FIRST_SETTINGS, **(settings or {})}, **more}


def test_records_from_before_a_factor_load_as_its_default_level():
    fm.parse_args(["--factor", "epochs=8,32"])  # registers the setting factor
    old = record(("relu", "maxpool", "adam"))
    loaded = run_store.with_factor_levels(old, ["batchnorm", "epochs"])
    assert loaded["batchnorm"] == "bn" and loaded["epochs"] == "epochs=32"
    assert loaded["name"] == "CNN_ReLU_MaxPool_Adam"  # its folder's name, unchanged
    short = run_store.with_factor_levels(record(("relu", "maxpool", "adam"), {"epochs": 8}), ["epochs"])
    assert short["name"] == "CNN_ReLU_MaxPool_Adam_epochs8"
    with pytest.raises(UsageError, match="epochs 12 is not a level of --factor epochs"):
        run_store.with_factor_levels(record(("relu", "maxpool", "adam"), {"epochs": 12}), ["epochs"])


def test_folders_of_two_budgets_merge_only_with_the_factor(tmp_path):
    for folder, epochs in (("long", 32), ("short", 8)):
        run = tmp_path / folder / "runs" / "CNN_ReLU_MaxPool_Adam" / "seed0"
        run.mkdir(parents=True)
        rec = record(("relu", "maxpool", "adam"), {"epochs": epochs}, val_accuracy=0.9 + epochs / 1000,
                     test_accuracy=0.9 + epochs / 1000)
        del rec["run_dir"]
        (run / "metrics.json").write_text(json.dumps(rec))
    folders = [tmp_path / "long", tmp_path / "short"]
    with pytest.raises(UsageError, match="different results|different settings"):
        run_store.merged_runs(folders)
    fm.parse_args(["--factor", "epochs=8,32"])
    merged = run_store.merged_runs(folders, ["epochs"])
    assert sorted(r["name"] for r in merged) == ["CNN_ReLU_MaxPool_Adam", "CNN_ReLU_MaxPool_Adam_epochs8"]


def budget_runs(seeds=range(3)):
    """The 8 variants at two budgets x 3 seeds: test accuracy 0.93, +0.4 pp for Adam at 32
    epochs only (so SGD's claim 6a is -0.2 pp averaged, 0 at 8 epochs, -0.4 at 32), a seed
    effect and noise."""
    budgets = levels.register_setting_factor("epochs", [8, 32], 32)
    rng = np.random.default_rng(1)
    runs = []
    for design, budget, seed in itertools.product(itertools.product(*levels.FACTORS.values()),
                                                  budgets, seeds):
        v = Variant(*design, (("epochs", budget),))
        bonus = 0.004 * (v.optimizer == "adam" and budget == "epochs=32")
        runs.append({"name": v.name, **v.levels, "seed": seed, "status": "ok",
                     "trainable_params": 595_114 + 83_264 * (v.downsampling == "strided"),
                     "downsampling_params": 83_264 * (v.downsampling == "strided"),
                     "test_accuracy": 0.93 + bonus + 0.001 * seed + 0.0005 * rng.standard_normal()})
    return runs


def test_k_factor_effects_and_the_claim_by_factor_interaction_match_cell_means():
    runs = budget_runs()
    cells = {}
    for r in runs:
        cells.setdefault((r["optimizer"], r["epochs"]), []).append(r["test_accuracy"])
    mean = {k: np.mean(v) for k, v in cells.items()}  # balanced: cell means average the rest
    # the main effect of the budget in the 4-factor model
    design = factorial.fit(runs, {**levels.FACTORS, "epochs": ("epochs=8", "epochs=32")},
                           "test_accuracy")
    budget = next(e for e in factorial.main_effects(design) if e["factor"] == "epochs")
    by_hand = (mean["adam", "epochs=32"] + mean["sgd", "epochs=32"]
               - mean["adam", "epochs=8"] - mean["sgd", "epochs=8"]) / 2
    assert budget["effect"] == pytest.approx(by_hand, abs=1e-12)
    assert design.df == 16 * 3 - 16 - 2  # 16 cells, 3 seeds as blocks
    # claim 6a (SGD better on test) at each budget, and its change between them
    result = claims_by_factor.claims_by_level(runs, "epochs")
    six = {lv: next(e for e in rows if e["claim"].startswith("6a")) for lv, rows in result["levels"].items()}
    assert six["epochs=8"]["effect"] == pytest.approx(mean["sgd", "epochs=8"] - mean["adam", "epochs=8"], abs=1e-12)
    assert six["epochs=32"]["verdict"].startswith("contradicted")
    change = next(e for e in result["interactions"] if e["claim"].startswith("6a"))
    assert change["level"] == "epochs=32" and change["reference"] == "epochs=8"
    assert change["effect"] == pytest.approx(six["epochs=32"]["effect"] - six["epochs=8"]["effect"], abs=1e-12)
    assert change["effect"] == pytest.approx(-0.004, abs=0.001) and change["depends"]
    assert change["family_size"] == len(result["interactions"]) == 3  # the claims on test accuracy
    t_family = stats.t.ppf(1 - 0.05 / (2 * 3), change["df"]) * change["se"]
    assert change["family_high"] - change["family_low"] == pytest.approx(2 * t_family, rel=1e-9)
    # the check with each budget's own residual variance: same difference, Welch's df
    own = change["separate"]
    se8, se32 = six["epochs=8"]["se"], six["epochs=32"]["se"]
    assert own["effect"] == pytest.approx(change["effect"], abs=1e-12)
    assert own["se"] == pytest.approx(np.hypot(se8, se32))
    assert own["df"] == pytest.approx((se8 ** 2 + se32 ** 2) ** 2 / (se8 ** 4 / 14 + se32 ** 4 / 14))
    assert own["depends"] and own["sigma"] == (six["epochs=8"]["sigma"], six["epochs=32"]["sigma"])
    # claims with nothing planted do not depend on the budget
    three = next(e for e in result["interactions"] if e["claim"].startswith("3a"))
    assert not three["depends"] and not three["separate"]["depends"]
    # the words beside each test give the p value of the rule that decides it
    from fmlab.figures.claims import depends_words
    for e in result["interactions"]:
        p = float(depends_words(e).split("Bonferroni p = ")[1].rstrip(")"))
        assert (p < 0.05) == e["depends"] and depends_words(e).startswith("yes" if e["depends"] else "not shown")
    assert depends_words({**three, "p": np.nan}) == "no test (no residual df)"
    from fmlab.report import report_study
    note = report_study.separate_variances_note(result, "epochs")
    assert "the same claims depend on epochs" in note
    # where one budget is far noisier the pooled test can say "depends" and the check not
    result["interactions"][-1]["separate"] = {**own, "depends": False, "sigma": (0.002, 0.0005)}
    note = report_study.separate_variances_note(result, "epochs")
    assert "0.25-" in note and "the verdict differs for 6a (depends with one variance only)" in note
    with pytest.raises(ValueError, match="mix levels"):
        claims.claims_table(runs)  # both budgets as repeats of one cell: refused



def test_a_level_with_one_seed_reports_its_table_without_a_figure(tmp_path):
    """A budget whose seeds 1-4 are still training: the other budget's claims are tested, the
    one-seed level's are not, and no figure sets them side by side (nothing to draw)."""
    from fmlab.report import report_study

    runs = [r for r in budget_runs() if r["epochs"] == "epochs=32" or r["seed"] == 0]
    tables, figures = report_study.claims_section(runs, [*levels.FACTORS, "epochs"], None, tmp_path)
    assert figures == [] and not list(tmp_path.iterdir())
    verdicts = {t[0]: {row[0][:2]: row[-1] for row in t[3]} for t in tables}
    assert verdicts["The classic claims, tested at 8 epochs"]["6a"].startswith("no verdict: one seed")
    assert verdicts["The classic claims, tested at 32 epochs"]["6a"] == "contradicted"
    assert verdicts["Does the verdict depend on epochs?"]["6a"].startswith("yes")
    six = next(row for row in tables[-1][3] if row[0].startswith("6a"))
    assert six[1].endswith("(no verdict)") and six[2].endswith("(contradicted)")
    full, _ = report_study.claims_section(budget_runs(), [*levels.FACTORS, "epochs"], None, tmp_path)
    assert (tmp_path / "claims_by_epochs.png").exists() and len(full) == 3


@pytest.mark.trains
def test_a_four_factor_grid_lists_trains_resumes_and_reports(tmp_path, monkeypatch, capsys):
    """A model part and a recipe setting as factors beside the three: 4 variants on
    synthetic data, one epoch; the folder re-renders with --report-only and no --factor."""
    from fmlab.run import data as data_module

    monkeypatch.setattr(data_module, "SPLIT_SIZES", {"train": 200, "test": 40})
    data = write_dataset(tmp_path / "data", 200, 40)
    out = tmp_path / "out"
    argv = ["--data-dir", str(data), "--precision", "float32", "--epochs", "1", "--batch-size", "10",
            "--no-tta", "--shift-images", "10", "--bn-stat-images", "0", "--activation", "relu",
            "--downsampling", "maxpool", "--optimizer", "adam", "--factor", "label_smoothing=0,0.1",
            "--factor", "batchnorm=bn,nobn", "--output-dir", str(out)]
    assert fm.main([*argv, "--list-variants"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert listed == ["CNN_ReLU_MaxPool_Adam", "CNN_ReLU_MaxPool_Adam_NoBN",
                      "CNN_ReLU_MaxPool_Adam_label-smoothing0.1",
                      "CNN_ReLU_MaxPool_Adam_NoBN_label-smoothing0.1"]
    assert fm.main(argv) == 0
    folder = out / "runs" / "CNN_ReLU_MaxPool_Adam_NoBN_label-smoothing0.1" / "seed0"
    saved = json.loads((folder / "metrics.json").read_text())
    assert saved["batchnorm"] == "nobn" and saved["label_smoothing"] == "label_smoothing=0.1"
    assert saved["settings"]["label_smoothing"] == 0.1
    old = out / "runs" / "CNN_ReLU_MaxPool_Adam" / "seed0" / "metrics.json"  # as if recorded
    record = json.loads(old.read_text())                                    # before the factors
    old.write_text(json.dumps({k: v for k, v in record.items() if k not in ("batchnorm", "label_smoothing")}))
    capsys.readouterr()
    assert fm.main(argv) == 0  # resumed: every run finished, nothing trains again
    assert capsys.readouterr().out.count("skip ") == 4
    header = (out / "results.csv").read_text().splitlines()[0].split(",")
    assert header[:6] == ["name", "activation", "downsampling", "optimizer", "batchnorm",
                          "label_smoothing"]
    summary = (out / "summary.md").read_text()
    assert "| NoBN vs BN |" in summary and "| label-smoothing0.1 vs label-smoothing0 |" in summary
    levels.LEVELS.pop("label_smoothing")  # a new process knows no setting factor yet
    assert fm.main(["--report-only", "--data-dir", str(data), "--output-dir", str(out)]) == 0
    assert (out / "summary.md").read_text() == summary


def test_every_optimizer_level_has_its_peak_in_the_recipe():
    """An optimizer level trains at Recipe.<level>_peak_lr, which --peak-lr-factor scales."""
    from fmlab.run.recipe import PEAKS

    assert sorted(PEAKS) == sorted(f"{name}_peak_lr" for name in levels.LEVELS["optimizer"])
    args = fm.parse_args(["--peak-lr-factor", "2"])
    doubled = Recipe.from_args(args, precision="float32")
    assert all(getattr(doubled, peak) == pytest.approx(2 * getattr(Recipe(), peak)) for peak in PEAKS)
