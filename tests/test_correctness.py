"""Correct wherever it runs: the precision a run records is the one it trained with, short
runs give meaningful numbers, resumes never mix settings, a kill at any moment leaves a
consistent run, and the runner says what it runs on."""

import dataclasses
import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import ROOT, inference_accuracy, require_real_data

from fmlab.core import environment
import fashion_mnist_cnn as fm
from fmlab.store import run_store
from fmlab.run import training
from fmlab.run.data import prepare_data
from fmlab.core.errors import UsageError
from fmlab.run.models import build_model
from fmlab.run.variants import Variant
from fmlab.run import recipe
from fmlab.run.recipe import Recipe
from fmlab.run.training_callbacks import RecomputeBatchNormStatistics

pytestmark = pytest.mark.trains  # trains models: left out of `make test-fast`

ONE = ["--activation", "relu", "--downsampling", "maxpool", "--optimizer", "adam"]
RUN = Path("runs/CNN_ReLU_MaxPool_Adam/seed0")


def metrics(out, run=RUN):
    return json.loads((out / run / run_store.METRICS).read_text())


# ----------------------------------------------------------------------------- 1. precision

def test_mixed_precision_is_what_every_run_trains_with(tmp_path, capsys):
    """clear_session() at the start of each run reset the global policy to float32: runs
    trained in float32 while their settings said otherwise. Two runs in one process."""
    require_real_data()
    out = tmp_path / "out"
    assert fm.main(["--subset", "100", "--batch-size", "90", "--test-images", "90",
                    "--shift-images", "90", "--epochs", "1",
                    "--precision", "mixed_bfloat16", "--no-report",
                    "--no-tta", "--activation", "relu", "--downsampling", "maxpool", "strided",
                    "--optimizer", "adam", "--output-dir", str(out)]) == 0
    assert "mixed_bfloat16 (--precision), XLA off" in capsys.readouterr().out
    for name in ("CNN_ReLU_MaxPool_Adam", "CNN_ReLU_Strided_Adam"):
        run = Path("runs") / name / "seed0"
        model = keras.models.load_model(out / run / "model.keras")
        assert model.get_layer("conv1").dtype_policy.name == "mixed_bfloat16", name
        assert model.get_layer("conv1").compute_dtype == "bfloat16"
        assert model.get_layer("softmax").dtype_policy.name == "float32"
        record = metrics(out, run)
        assert record["settings"]["precision"] == record["environment"]["precision"] == "mixed_bfloat16"


@pytest.mark.parametrize("gpus, flags, expected", [
    (0, {"fpu", "avx2", "amx_bf16", "amx_tile", "avx512_bf16"}, ("mixed_bfloat16", "amx_bf16")),
    (0, {"avx512f", "avx512_bf16"}, ("mixed_bfloat16", "avx512_bf16")),  # AMD Zen 4
    (0, {"avx2", "avx512f"}, ("float32", "no native bfloat16")),  # bfloat16 only emulated
    (0, set(), ("float32", "no native bfloat16")),  # no /proc/cpuinfo (macOS, Windows)
    (1, {"amx_bf16"}, ("mixed_float16", "a GPU")),
])
def test_auto_precision_follows_the_hardware(gpus, flags, expected):
    policy, why = environment.auto_precision(gpus, frozenset(flags))
    assert policy == expected[0] and why.startswith("auto: ") and expected[1] in why


def test_bfloat16_without_native_support_is_named_in_one_line():
    warning = environment.slow_bfloat16_warning("mixed_bfloat16", 0, frozenset({"avx2"}))
    assert warning.startswith("warning: mixed_bfloat16 on a CPU without native") and "\n" not in warning
    for precision, gpus, flags in (("mixed_bfloat16", 0, {"avx512_bf16"}), ("float32", 0, set()),
                                   ("mixed_bfloat16", 1, set()), ("mixed_bfloat16", 0, {"amx_bf16"})):
        assert environment.slow_bfloat16_warning(precision, gpus, frozenset(flags)) is None


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: X\nflags\t\t: fpu avx512_bf16 amx_bf16\n")
    assert environment.cpu_flags(cpuinfo) == {"fpu", "avx512_bf16", "amx_bf16"}
    assert environment.cpu_flags(tmp_path / "missing") == frozenset()


def test_a_folder_keeps_one_precision(tmp_path, monkeypatch):
    """auto resolves per machine; a grid resumed elsewhere keeps its folder's precision, and
    an explicit other precision is refused in one line."""
    monkeypatch.setattr(recipe, "resolve_precision", lambda p: (
        ("float32", "auto: the CPU has no native bfloat16") if p == "auto" else (p, "--precision")))
    assert recipe.grid_precision("auto", tmp_path) == ("float32",
                                                         "auto: the CPU has no native bfloat16")
    run_store.start_run_folder(tmp_path / "runs/CNN_ReLU_MaxPool_Adam/seed0",
                               dataclasses.asdict(Recipe(precision="mixed_bfloat16")))
    assert recipe.grid_precision("auto", tmp_path) == (
        "mixed_bfloat16", f"auto: kept from the runs already in {tmp_path}")
    assert recipe.grid_precision("mixed_bfloat16", tmp_path)[0] == "mixed_bfloat16"
    with pytest.raises(UsageError, match="holds runs in mixed_bfloat16; .* --precision mixed_bfloat16"):
        recipe.grid_precision("float32", tmp_path)
    run_store.start_run_folder(tmp_path / "runs/CNN_ReLU_Strided_Adam/seed0",
                               dataclasses.asdict(Recipe(precision="float32")))
    with pytest.raises(UsageError, match="holds runs in float32 and mixed_bfloat16"):
        recipe.grid_precision("auto", tmp_path)


def test_an_explicit_precision_beside_another_is_refused_by_the_cli(tmp_path, capsys):
    run_store.start_run_folder(tmp_path / "runs/CNN_ReLU_MaxPool_Adam/seed0",
                               dataclasses.asdict(Recipe(precision="mixed_bfloat16")))
    assert fm.main([*ONE, "--precision", "float32", "--output-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "one precision" in err and "\n" not in err


def test_mixed_float16_gets_a_loss_scale_optimizer():
    variant = Variant("relu", "maxpool", "adam")
    try:
        training.start_run(0, "mixed_float16")
        model = training.compiled_model(variant, training.distribution_strategy("none"), 10,
                                        Recipe(epochs=2))
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        assert model.get_layer("conv2").compute_dtype == "float16"
        training.start_run(0, "float32")  # the next run starts from a clean policy
        model = training.compiled_model(variant, training.distribution_strategy("none"), 10,
                                        Recipe(epochs=2))
        assert not isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        assert model.get_layer("conv2").compute_dtype == "float32"
    finally:
        training.start_run(0, "float32")


# ----------------------------------------------------------------------------- 6. short runs

def test_a_short_run_evaluates_with_statistics_that_fit_its_weights(short_run):
    """72 steps at momentum 0.99 leave batch norm's moving statistics near their initial
    values: validation accuracy near chance however well the network trained. Recomputed
    statistics make validation accuracy close to the training accuracy in inference mode."""
    out, _ = short_run
    record = metrics(out)
    assert record["settings"]["bn_stat_images"] == Recipe().bn_stat_images == 2048
    data = prepare_data(None, 2560, 0.1, seed=0)
    model = keras.models.load_model(out / RUN / "model.keras")
    train_accuracy = inference_accuracy(model, *data["train"])
    print(f"val {record['val_accuracy']:.3f}, train (inference mode) {train_accuracy:.3f}, "
          f"test {record['test_accuracy']:.3f}")
    assert record["val_accuracy"] > 0.6 and record["test_accuracy"] > 0.6
    assert abs(record["val_accuracy"] - train_accuracy) < 0.08
    # the saved model is the one validated: the same statistics give the same accuracy
    assert inference_accuracy(model, *data["val"]) == pytest.approx(record["val_accuracy"], abs=0.006)


def test_recomputed_statistics_are_those_of_the_layer_inputs():
    rng = np.random.default_rng(0)
    images = rng.random((300, 28, 28, 1), dtype=np.float32)
    training.start_run(0, "float32")
    model = build_model(Variant("leakyrelu", "strided", "sgd"))
    callback = RecomputeBatchNormStatistics(images)
    callback.set_model(model)
    callback.on_train_begin()
    callback.on_test_begin()
    for name in ("bn1", "down1_bn", "bn4", "down3_bn"):  # the first, and later ones
        bn = model.get_layer(name)
        inputs = keras.Model(model.inputs[0], bn.input).predict(images, verbose=0)
        np.testing.assert_allclose(bn.moving_mean.numpy(), inputs.mean(axis=(0, 1, 2)), atol=1e-4)
        np.testing.assert_allclose(bn.moving_variance.numpy(), inputs.var(axis=(0, 1, 2)),
                                   rtol=1e-3, atol=1e-5)


# ----------------------------------------------------------------------------- 4. settings

def test_an_interrupted_run_resumes_only_with_its_own_settings(tmp_path, capsys):
    """Resuming with another --epochs restored the old optimizer step into a new schedule."""
    out = tmp_path / "out"
    args = fm.parse_args(["--epochs", "3", *ONE, "--output-dir", str(out)])
    (out / RUN).mkdir(parents=True)
    (out / RUN / "settings.json").write_text(json.dumps(dataclasses.asdict(Recipe.from_args(args))))
    (out / RUN / "history.csv").write_text("epoch,accuracy\n0,0.5\n")
    code = fm.main(["--epochs", "4", *ONE, "--output-dir", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "(interrupted)" in err and "--epochs 3 (now 4)" in err
    assert (out / RUN / "history.csv").read_text() == "epoch,accuracy\n0,0.5\n"  # untouched


# ----------------------------------------------------------------------------- 5. kills

def write_state(run_dir, logged, main=None, previous=None, checkpoints=()):
    """A run folder as a kill could leave it: `logged` history rows (val accuracy rising
    except epoch 3), backup metadata texts, best-so-far checkpoints (1-based epochs)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    values = [0.5, 0.6, 0.55, 0.7, 0.8][:logged]
    (run_dir / "history.csv").write_text("epoch,accuracy,loss,seconds,val_accuracy,val_loss\n" + "".join(
        f"{e},0.5,1.0,10.0,{v},0.9\n" for e, v in enumerate(values)))
    backup = run_dir / "backup"
    for text, suffix in ((main, ""), (previous, ".bkp")):
        if text is not None:
            backup.mkdir(exist_ok=True)
            (backup / f"training_metadata.json{suffix}").write_text(text)
            (backup / f"latest.weights.h5{suffix}").write_text("weights")
    for epoch in checkpoints:
        run_store.checkpoint_path(run_dir, epoch).write_text("model")


def assert_consistent(run_dir, kept):
    """The invariant: the backup covers exactly the kept rows, and the only checkpoint left is
    the best kept row's -- the one that will be evaluated is a logged epoch."""
    assert run_store.read_history(run_dir / "history.csv") == kept
    epoch = run_store.backup_epoch(run_dir / "backup" / "training_metadata.json")
    assert epoch == (len(kept) or None)
    assert run_store.checkpoint_epochs(run_dir) == ([run_store.best_logged_epoch(kept)] if kept else [])


def meta(epoch):
    return json.dumps({"epoch": epoch, "batch": 0})


@pytest.mark.parametrize("state, expect_rows, expect_note", [
    # killed in epoch 3's training: everything of epochs 1-2 is whole
    (dict(logged=2, main=meta(2), previous=meta(1), checkpoints=[2]), 2, None),
    # killed after epoch 3's checkpoint, before its backup
    (dict(logged=2, main=meta(2), previous=meta(1), checkpoints=[2, 3]), 2, None),
    # killed while epoch 3's metadata was written: empty or truncated; the previous is whole
    (dict(logged=2, main="", previous=meta(2), checkpoints=[2, 3]), 2, "resuming from the one before"),
    (dict(logged=2, main='{"epo', previous=meta(2), checkpoints=[2]), 2, "resuming from the one before"),
    # killed after epoch 3's backup, before its history row: the backup is ahead of the log
    (dict(logged=2, main=meta(3), previous=meta(2), checkpoints=[2, 3]), 2, "resuming from the one before"),
    # killed after epoch 4's row, before the superseded checkpoint was deleted
    (dict(logged=4, main=meta(4), previous=meta(3), checkpoints=[2, 4]), 4, None),
    # killed while the very first backup was written: nothing to resume from
    (dict(logged=0, main="", checkpoints=[1]), 0, "starts over"),
    (dict(logged=0, main="{", previous=None, checkpoints=[]), 0, "starts over"),
    # both backups unreadable after a logged epoch
    (dict(logged=1, main="", previous="", checkpoints=[1]), 0, "starts over"),
    # the best logged epoch's checkpoint is gone (deleted by hand)
    (dict(logged=2, main=meta(2), previous=meta(1), checkpoints=[]), 0, "checkpoint"),
])
def test_any_kill_leaves_a_consistent_run(tmp_path, state, expect_rows, expect_note):
    run_dir = tmp_path / "run"
    write_state(run_dir, **state)
    rows = run_store.read_history(run_dir / "history.csv")
    kept, note = run_store.prepare_resume(run_dir, epochs=5)
    assert kept == rows[:expect_rows]
    assert_consistent(run_dir, kept)
    assert (note is None) if expect_note is None else (expect_note in note)


KILLED_WHILE_BACKING_UP = textwrap.dedent("""
    # Run the runner, but die (like kill -9) while Keras writes backup number {save}'s
    # metadata, leaving it {how}.
    import json, os, sys
    sys.path.insert(0, {root!r})
    import keras
    import fashion_mnist_cnn as fm
    saves = []
    def save_then_die(self):
        saves.append(1)
        if len(saves) < {save}:
            return original(self)
        os.makedirs(self.backup_dir, exist_ok=True)
        if os.path.exists(self._weights_path):  # what double_checkpoint does first
            import shutil
            shutil.copy(self._weights_path, self._prev_weights_path)
            shutil.copy(self._training_metadata_path, self._prev_training_metadata_path)
        self.model.save_weights(self._weights_path, overwrite=True)
        text = json.dumps({{"epoch": self._current_epoch, "batch": 0}})
        open(self._training_metadata_path, "w").write({cut})
        os._exit(137)
    original = keras.callbacks.BackupAndRestore._save_model
    keras.callbacks.BackupAndRestore._save_model = save_then_die
    fm.main(sys.argv[1:])
""")


def test_killed_while_keras_writes_its_backup(tmp_path, capsys):
    """Keras writes training_metadata.json in place: killed while it writes the second
    backup, the run folder holds a truncated one beside the whole first backup (.bkp). The
    rerun resumes from that one, with a note. (An empty first backup, with no predecessor,
    starts over: test_any_kill_leaves_a_consistent_run.)"""
    require_real_data()
    out = tmp_path / "out"
    argv = ["--subset", "320", "--test-images", "320", "--shift-images", "100", "--epochs", "2",
            "--batch-size", "32", "--no-tta", "--no-report", *ONE, "--output-dir", str(out)]
    script = KILLED_WHILE_BACKING_UP.format(root=str(ROOT), save=2, how="truncated", cut="text[:7]")
    killed = subprocess.run([sys.executable, "-c", script, *argv], capture_output=True,
                            text=True, cwd=ROOT, timeout=600)
    assert killed.returncode == 137, killed.stderr[-2000:]
    metadata = out / RUN / "backup" / "training_metadata.json"
    assert len(metadata.read_text()) == 7
    assert run_store.backup_epoch(metadata) is None

    capsys.readouterr()
    assert fm.main(argv) == 0  # the rerun, in this process
    printed = capsys.readouterr().out
    assert "note: " in printed and "resuming from the one before" in printed
    history = run_store.read_history(out / RUN / "history.csv")
    assert [int(r["epoch"]) for r in history] == [0, 1]
    # the evaluated checkpoint is a logged epoch: it reproduces that epoch's val accuracy
    record = metrics(out)
    assert record["best_epoch"] == run_store.best_logged_epoch(history)
    model = keras.models.load_model(out / RUN / "model.keras")
    data = prepare_data(None, 320, 0.1, seed=0)
    assert inference_accuracy(model, *data["val"]) == pytest.approx(
        history[record["best_epoch"] - 1]["val_accuracy"], abs=1e-6)


# ----------------------------------------------------------------------------- 3. environment

def test_metrics_say_where_the_numbers_came_from(tiny_grid):
    out, stdout, _ = tiny_grid
    env = json.loads(next(out.glob("runs/*/seed0/metrics.json")).read_text())["environment"]
    assert env["backend"] == "tensorflow" and env["replicas"] == 1 and env["precision"] == "float32"
    assert env["precision_reason"] == "--precision"  # the shared grid pins it (conftest)
    # Keras' jit_compile="auto" as resolved on TensorFlow: XLA on a GPU, off on a CPU
    assert env["xla"] is bool(recipe.gpus())
    assert env["packages"]["tensorflow"] and env["packages"]["keras"].startswith("3.")
    assert env["device"] and env["cpu_count"] == os.cpu_count()
    assert environment.summary_line(env) == stdout.splitlines()[0]  # the start line says it too
    assert "tensorflow backend on" in stdout.splitlines()[0]


def fake_nvidia_smi(folder, listing):
    script = folder / "nvidia-smi"
    script.write_text(f"#!/bin/sh\nprintf '{listing}'\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)


def test_a_gpu_tensorflow_cannot_use_is_named_in_one_line(tmp_path, monkeypatch):
    fake_nvidia_smi(tmp_path, "GPU 0: NVIDIA H200 (UUID: GPU-1234)\\n")
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    warning = environment.gpu_mismatch_warning(0)
    assert warning.startswith("warning: nvidia-smi lists 1 GPU(s)") and "\n" not in warning
    assert environment.gpu_mismatch_warning(1) is None  # TensorFlow sees it: all is well
    fake_nvidia_smi(tmp_path, "No devices were found\\n")
    assert environment.gpu_mismatch_warning(0) is None
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert environment.gpu_mismatch_warning(0) is None


# ----------------------------------------------------------------------------- 7. first hour

def test_quick_runs_get_their_own_folder():
    """`make run ARGS=--quick` then `make run` refused: both wrote to results/."""
    assert fm.parse_args(["--quick"]).output_dir == Path("results-quick")
    assert fm.parse_args([]).output_dir == Path("results")
    assert fm.parse_args(["--quick", "--output-dir", "mine"]).output_dir == Path("mine")
    assert Recipe.from_args(fm.parse_args(["--quick"])) == Recipe(**recipe.QUICK,
                                                                  precision=recipe.resolve_precision("auto")[0])
    auto = recipe.resolve_precision("auto")[0]  # this machine's: the tests run anywhere
    assert Recipe.from_args(fm.parse_args([])) == Recipe(precision=auto)


def test_help_listing_and_report_only_import_no_tensorflow(tmp_path):
    """A newcomer's first commands start fast: --help, --list-variants and --report-only of
    a committed study (no saved models) never load TensorFlow."""
    study = tmp_path / "study"
    shutil.copytree(ROOT / "docs" / "runs" / "CNN_ReLU_MaxPool_Adam", study / "runs" / "CNN_ReLU_MaxPool_Adam")
    code = ("import sys, contextlib, io, fashion_mnist_cnn as fm\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    codes = [fm.main(['--list-variants', '--factor', 'epochs=8,32']),\n"
            f"             fm.main(['--report-only', '--output-dir', {str(study)!r}])]\n"
            "    try:\n"
            "        fm.main(['--help'])\n"
            "    except SystemExit as e:\n"
            "        codes.append(e.code)\n"
            "print(codes, sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.strip().splitlines()[-1] == "[0, 0, 0] []", out.stdout[-2000:] + out.stderr[-2000:]
    assert (study / "summary.md").is_file()


def test_the_report_and_the_benchmark_orchestrators_import_no_tensorflow():
    """--report-only's modules and the benchmarks' orchestrators stay light: drawing from
    saved runs needs no TensorFlow."""
    code = ("import sys; import fmlab.report.report, benchmarks.ablation, benchmarks.frontier, benchmarks.parity; "
            "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1], check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("script, config", [("ablation", "--configs"), ("frontier", "--config")])
def test_a_budget_flag_after_base_flags_is_refused(script, config):
    """--base-flags takes the rest of the line: --epochs written after it would reach the
    runner and override the script's own budget (training a 32-epoch run into an 8-epoch
    folder). Refused in one message before anything trains."""
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-m", f"benchmarks.{script}", config, "baseline",
                           "--table-only", "--base-flags", "--precision", "float32", "--epochs", "32"],
                          capture_output=True, text=True, cwd=root)
    assert done.returncode == 2
    assert "--base-flags took --epochs, which this script sets itself" in done.stderr


@pytest.mark.parametrize("script, argv, message", [
    ("ablation", ["--variant", "relu", "maxpool", "rmsprop"], "unknown optimizer 'rmsprop'"),
    ("ablation", ["--configs", "cutout"], "unknown configuration 'cutout'"),
    ("frontier", ["--config", "cutout"], "unknown configuration 'cutout'"),
    ("frontier", ["--config", "baseline", "--epochs", "8", "0"], "'0' must be at least 1"),
    ("parity", ["--variants", "relu,maxpool"], "is not ACTIVATION,DOWNSAMPLING,OPTIMIZER"),
    ("parity", ["--float32-runs", "no-such-folder"], "has no finished relu/maxpool/adam seed 0"),
])
def test_bad_benchmark_arguments_are_one_line_before_anything_trains(script, argv, message,
                                                                     tmp_path):
    """The benchmark scripts check their arguments (levels, configurations, budgets, the
    float32 folder parity.py pairs with) before the first run starts, in one line, exit 2."""
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-m", f"benchmarks.{script}", *argv,
                           "--output-dir", str(tmp_path / "runs")],
                          capture_output=True, text=True, cwd=tmp_path, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(root)})  # run from elsewhere
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "runs").exists()  # nothing trained, nothing written


def test_ablation_table_without_saved_models_keeps_its_checkpoint_rows(tmp_path):
    """Saved models stay out of git, so a fresh checkout cannot re-score the baseline's
    checkpoints: --table-only keeps those rows from the table of the same runs, and where
    there is none says what they need, instead of failing."""
    import argparse

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import ablation

    for config, accuracy in (("baseline", 0.9457), ("translate_2px", 0.9450)):
        folder = run_store.run_dir(tmp_path / config, "CNN_ReLU_MaxPool_SGD", 0)
        folder.mkdir(parents=True)
        run_store.write_metrics(folder, {
            "name": "CNN_ReLU_MaxPool_SGD", "activation": "relu", "downsampling": "maxpool",
            "optimizer": "sgd", "seed": 0, "status": "ok", "val_accuracy": accuracy,
            "train_seconds": 640.0, "epochs_run": 32})
    args = argparse.Namespace(variant=["relu", "maxpool", "sgd"], epochs=32, seeds=[0],
                              configs=["baseline", "translate_2px"], output_dir=tmp_path,
                              table=tmp_path / "table.md")
    fresh = ablation.table(args).splitlines()
    assert fresh[5] == "| translate_2px | 94.50 | 94.50 | -0.07 (-0.07) | 20 |"
    assert fresh[6].startswith("| baseline checkpoints + flip TTA at evaluation | (needs the "
                               "baseline's saved models) |")
    assert fresh[6].count("|") == fresh[2].count("|")  # as many cells as the header
    measured = "| baseline checkpoints + flip TTA at evaluation | 94.60 | 94.60 | +0.03 (+0.03) vs the same checkpoints without | – |"
    args.table.write_text("\n".join([*fresh[:6], measured, fresh[7]]) + "\n")
    assert measured in ablation.table(args).splitlines()
    args.epochs = 24  # a table of other runs (its first line differs) lends no row
    assert ablation.table(args).splitlines()[6].startswith(fresh[6][:60])


def test_ablation_table_tells_a_technique_not_run_from_one_unfinished(tmp_path):
    """A seed screen stops some techniques before their last seed: the table says "not run"
    for a seed without a run folder and "unfinished" for one that has started."""
    import argparse

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import ablation

    for config in ("baseline", "translate_2px", "label_smoothing_0.1"):
        folder = run_store.run_dir(tmp_path / config, "CNN_ReLU_MaxPool_SGD", 0)
        folder.mkdir(parents=True)
        run_store.write_metrics(folder, {
            "name": "CNN_ReLU_MaxPool_SGD", "activation": "relu", "downsampling": "maxpool",
            "optimizer": "sgd", "seed": 0, "status": "ok", "val_accuracy": 0.945,
            "train_seconds": 640.0, "epochs_run": 32})
    run_store.run_dir(tmp_path / "label_smoothing_0.1", "CNN_ReLU_MaxPool_SGD", 1).mkdir()
    args = argparse.Namespace(variant=["relu", "maxpool", "sgd"], epochs=32, seeds=[0, 1],
                              configs=["translate_2px", "label_smoothing_0.1"],
                              output_dir=tmp_path, table=tmp_path / "table.md")
    rows = ablation.table(args).splitlines()
    assert rows[4] == "| translate_2px | 94.50 | – | (not run) | | |"
    assert rows[5] == "| label_smoothing_0.1 | 94.50 | – | (unfinished) | | |"
