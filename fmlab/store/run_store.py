"""The store's face: finished runs and their records, the results table, shards, and which
planned runs are still to do.

The folder layout and the kill-safe writes are in fmlab.store.layout, resuming a run in
fmlab.store.resume; both are re-exported here, so the rest of the lab reads and writes runs
through this module. Nothing here knows about models beyond saving one: the runner trains,
the store makes what it writes survive kill -9 and lets several workers share one folder,
each taking the slice of the grid its --shard, Slurm array index or Kubernetes Job index
gives it.
"""

import argparse
import csv
import fcntl
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from fmlab.core.errors import UsageError
from fmlab.store.layout import (  # noqa: F401  (re-exported: run_store is the store's face)
    BACKUP, CHECKPOINT_PATTERN, FIGURE_DATA, HISTORY, METRICS, MODEL, PREDICTIONS, RUNS,
    SETTINGS, TENSORBOARD, TUNING, atomic_save_npz, atomic_write, device_of, lr_multiplier_of,
    metrics_paths, read_history, run_dir, run_key, runs_folder, temp_file_beside)
from fmlab.store.resume import (  # noqa: F401  (re-exported)
    backup_epoch, best_logged_epoch, checkpoint_epochs, checkpoint_path, prepare_resume,
    remove_leftover_temp_files)
from fmlab.core.levels import (DEFAULT_LEVEL, DESIGN, LEVELS, MODEL_PARTS, format_value,
                               setting_level, variant_name)

def read_wide_sweep(output_dir):
    """The variant names recorded as swept wide in output_dir, or None (every variant)."""
    path = Path(output_dir) / TUNING
    return json.loads(path.read_text())["wide_sweep"] if path.exists() else None


def record_wide_sweep(output_dir, names):
    atomic_write(Path(output_dir) / TUNING, json.dumps({"wide_sweep": list(names)}, indent=1) + "\n")


def wide_sweep(requested, output_dir, names, record=True):
    """The names of the variants whose learning-rate sweep grows (None: all): the folder's
    recorded choice, else --wide-sweep's (of the grid's `names`), recorded now (unless not
    `record`: a dry run). A study is one experiment: another choice for a folder, or one
    given after its sweep began, is refused."""
    recorded = read_wide_sweep(output_dir)
    if requested is None:
        return recorded
    unknown = [n for n in requested if n not in names]
    if unknown:
        raise UsageError(f"--wide-sweep {unknown[0]}: not a variant of this grid "
                         "(--list-variants prints them)")
    if recorded is not None and set(recorded) != set(requested):
        raise UsageError(f"{output_dir} sweeps wide {' '.join(recorded)} (its {TUNING}): one "
                         "folder, one protocol; use another --output-dir")
    if recorded is None and any(lr_multiplier_of(r) != 1 for r in finished_runs(output_dir)):
        raise UsageError(f"{output_dir} holds a sweep begun for every variant: --wide-sweep "
                         "would change its protocol; use another --output-dir")
    chosen = [n for n in names if n in requested]
    if record:
        record_wide_sweep(output_dir, chosen)
    return chosen


def carry_wide_sweep(source_dirs, output_dir):
    """--report-only DIR ... --output-dir OUT: OUT's report reads the sweep protocol the
    merged folders recorded (they and OUT must agree), so a study reported elsewhere says it."""
    own = read_wide_sweep(output_dir)
    recorded = {tuple(names) for names in [*map(read_wide_sweep, source_dirs), own]
                if names is not None}
    if len(recorded) > 1:
        raise UsageError("the folders to report swept different variants wide (their "
                         f"{TUNING}): one report, one protocol")
    if recorded and own is None:
        record_wide_sweep(output_dir, recorded.pop())


RESULT_COLUMNS = ["name", "activation", "downsampling", "optimizer", "lr_multiplier", "peak_lr",
                  "seed", "status", "trainable_params", "downsampling_params", "epochs_run",
                  "best_epoch", "train_accuracy", "train_loss", "val_accuracy", "val_loss",
                  "test_accuracy", "test_loss", "val_accuracy_epoch1", "val_accuracy_epoch2",
                  "epochs_to_90", "epochs_to_92", "train_eval_accuracy", "generalization_gap",
                  "loss_gap", "never_positive_units", "ece", "shift_consistency",
                  "shift_accuracy_1px", "shift_accuracy_3px", "train_seconds", "device"]


def check_same_settings(recorded, now, where, names=None):
    """Refuse to continue or reuse a run made with other settings (one line naming them, as
    names -- setting -> its name on the command line -- has them, else by their key)."""
    recorded = settings_of({"settings": recorded})
    changed = [k for k in sorted(set(recorded) | set(now)) if recorded.get(k) != now.get(k)]
    if changed:
        what = ", ".join(f"{(names or {}).get(k, k)} {recorded.get(k)} (now {now.get(k)})"
                         for k in changed)
        raise UsageError(f"{where}: made with {what}; use the same settings, another "
                         f"--output-dir, or --fresh to retrain")


def format_seconds(seconds):
    m, s = divmod(int(round(seconds)), 60)
    return f"{m // 60}h{m % 60:02d}m" if m >= 60 else f"{m}m{s:02d}s"


def run_label(run):
    """The variant's name, and its learning-rate multiplier where it is not 1."""
    multiplier = lr_multiplier_of(run)
    return run["name"] if multiplier == 1 else f"{run['name']} (lr x{multiplier:g})"


def run_order(run):
    """Tables list finished runs best validation accuracy first, failed runs last."""
    return (run["status"] != "ok", -(run.get("val_accuracy") or 0), *run_key(run))


def finished_runs(output_dir):
    """metrics.json of every finished (or failed) run under output_dir/runs, best first."""
    runs = []
    for path in metrics_paths(output_dir):
        run = json.loads(path.read_text())
        run.update(run_dir=str(path.parent), history=read_history(path.parent / HISTORY))
        runs.append(run)
    return sorted(runs, key=run_order)


# Settings no longer offered, at the value that meant "off": runs that recorded them so are
# the same experiment as runs without them.
RETIRED_SETTINGS = {"tta_translate": 0}


def settings_of(run):
    """A run's settings, with those added later at the value runs from before them had (the
    warm-up and SGD's momentum and decay were fixed before they became settings)."""
    settings = {"replica_scaling": 1, "bn_momentum": 0.99, "bn_stat_images": 0, "shift_images": 10000,
                "label_smoothing": 0.0, "ema": 0.0, "translate": 0, "adamw_weight_decay": 1e-4,
                "warmup_epochs": 1, "sgd_momentum": 0.9, "sgd_weight_decay": 5e-4,
                "test_images": None, "dirac_init": False, "bn_scale": True, "lookahead": 0,
                "lookahead_alpha": 0.5, "alternating_flips": False, "random_erasing": 0.0,
                **run.get("settings", {})}
    for key, neutral in RETIRED_SETTINGS.items():  # a run that used one stays different
        if settings.get(key) == neutral:
            del settings[key]
    if "replicas" in settings:  # older runs scaled batch and learning rate by the replicas
        settings["replica_scaling"] = settings.pop("replicas")
    if "lr_scale" in settings:  # the peak factor's name before 2026-12-07
        settings["peak_lr_factor"] = settings.pop("lr_scale")
    for optimizer, peak in (("adam", 2e-3), ("sgd", 0.05)):  # the peaks before they were recorded
        settings.setdefault(f"{optimizer}_peak_lr", peak * settings.get("peak_lr_factor", 1.0))
    return settings


def with_factor_levels(run, factors):
    """The run as a grid with the extra `factors` (names of LEVELS' factors beyond the design's
    three) sees it: its level of each -- a Recipe setting's from the run's settings, a model
    part's from its record -- and its variant name with their suffixes. A record from before
    a factor existed is at the factor's default level."""
    if not factors:
        return run
    settings = settings_of(run)
    extra = []
    for factor in factors:
        if factor in MODEL_PARTS:
            name = run.get(factor, DEFAULT_LEVEL[factor])
        else:
            name = setting_level(factor, settings[factor]).name
            if name not in LEVELS[factor]:
                raise UsageError(f"{run['run_dir']}: {factor} {format_value(settings[factor])} "
                                 f"is not a level of --factor {factor} "
                                 f"({', '.join(LEVELS[factor])})")
        extra.append((factor, name))
    design = tuple(run[f] for f in DESIGN)
    return {**run, **dict(extra), "name": variant_name(design, tuple(extra))}


def merged_runs(output_dirs, factors=()):
    """The finished runs of several output dirs (shards of one grid) as one list. A run found
    in two dirs is kept once if both copies agree and refused if they differ; runs trained
    with different settings are refused, since their numbers are not comparable -- except in
    the settings that `factors` (extra factors, with_factor_levels) vary on purpose."""
    by_key = {}
    for folder in dict.fromkeys(Path(d).resolve() for d in output_dirs):
        if not folder.is_dir():
            raise UsageError(f"{folder}: no such folder to report from")
        for run in finished_runs(folder):
            run = with_factor_levels(run, factors)
            key = run_key(run)
            if key not in by_key:
                by_key[key] = run
            elif (by_key[key]["status"], by_key[key].get("test_accuracy")) != (
                    run["status"], run.get("test_accuracy")):
                raise UsageError(f"{run_label(run)} seed {run['seed']} is in {by_key[key]['run_dir']} "
                                f"and {run['run_dir']} with different results; remove one")
            else:
                print(f"note: {run_label(run)} seed {run['seed']} is in two folders (same results); "
                      f"using {by_key[key]['run_dir']}")
    settings = {json.dumps({k: v for k, v in settings_of(r).items() if k not in factors},
                           sort_keys=True): r for r in by_key.values()}
    if len(settings) > 1:
        examples = "; ".join(f"{r['run_dir']}: {s}" for s, r in settings.items())
        raise UsageError(f"runs with different settings cannot share one report ({examples})")
    return sorted(by_key.values(), key=run_order)


def extra_factors(runs):
    """The factors beyond the design's three that the runs' records name (registered in
    LEVELS: model parts, and Recipe settings made factors on this command line)."""
    return [f for f in LEVELS if f not in DESIGN and any(f in r for r in runs)]


def result_columns(runs):
    """RESULT_COLUMNS, with a column for each extra factor after the design's three."""
    at = RESULT_COLUMNS.index("optimizer") + 1
    return RESULT_COLUMNS[:at] + extra_factors(runs) + RESULT_COLUMNS[at:]


def write_results_table(output_dir, runs=None):
    """Write results.csv/json of `runs` (default: every finished run in output_dir, read under
    the lock, so two workers finishing at once both end up in the table)."""
    output_dir = Path(output_dir)
    with open(output_dir / ".results.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        runs = finished_runs(output_dir) if runs is None else runs
        columns = result_columns(runs)
        rows = [{k: run.get(k) for k in columns} for run in runs]
        for row, run in zip(rows, runs):  # where it trained: a grid may span machines
            row["device"] = device_of(run)
        atomic_write(output_dir / "results.json", json.dumps(rows, indent=2) + "\n")
        with tempfile.SpooledTemporaryFile(mode="w+") as buf:
            writer = csv.DictWriter(buf, columns)
            writer.writeheader()
            writer.writerows(rows)
            buf.seek(0)
            atomic_write(output_dir / "results.csv", buf.read())
    return rows


def parse_shard(text):
    index, _, count = text.partition("/")
    try:
        index, count = int(index), int(count)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not I/N, e.g. 0/4") from None
    if not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"{text!r}: need 0 <= I < N")
    return index, count


def shard_from_environment(shard, shard_count, environ):
    """(index, count) of this worker's slice: --shard, else a Slurm array task's or a
    Kubernetes Indexed Job's index; None runs the whole grid."""
    try:
        if shard:
            return shard
        if "SLURM_ARRAY_TASK_ID" in environ:
            index = int(environ["SLURM_ARRAY_TASK_ID"]) - int(environ.get("SLURM_ARRAY_TASK_MIN", 0))
            count = int(environ["SLURM_ARRAY_TASK_COUNT"])
            source = "SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN"
        elif "JOB_COMPLETION_INDEX" in environ:
            if shard_count is None:
                raise UsageError("JOB_COMPLETION_INDEX is set: give --shard-count N (the Job's "
                                "completions) or --shard I/N")
            index, count, source = int(environ["JOB_COMPLETION_INDEX"]), shard_count, "JOB_COMPLETION_INDEX"
        elif shard_count is not None:
            raise UsageError("--shard-count needs JOB_COMPLETION_INDEX in the environment; "
                            "else use --shard I/N")
        else:
            return None
    except (KeyError, ValueError) as e:
        raise UsageError(f"cannot read the shard from the environment: {e!r} "
                        "(need integer SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT)") from None
    if not 0 <= index < count:
        raise UsageError(f"shard {index} from {source} is not within 0..{count - 1} (arrays must be "
                        "contiguous, e.g. --array=0-7)")
    return index, count


# ----------------------------------------------------------------------------- one run's folder

def folder_precisions(output_dir):
    """The precisions (dtype policies) of the runs, finished or not, in output_dir."""
    return {json.loads(path.read_text()).get("precision", "float32")
            for path in runs_folder(output_dir).glob(f"*/seed*/{SETTINGS}")}


def runs_to_do(planned, output_dir, settings, fresh, names=None):
    """Which of the planned (variant, seed, lr multiplier) runs to train: ([(variant, seed,
    multiplier, run_dir)], [(variant, seed, multiplier, status)] of those skipped as
    finished). A finished or interrupted run made with other settings is refused
    (UsageError, naming each setting as names has it: check_same_settings); fresh deletes
    and retrains. settings: the recipe's dict, or a function of the variant giving its own."""
    todo, skipped = [], []
    settings_for = settings if callable(settings) else (lambda variant: settings)
    for variant, seed, multiplier in planned:
        settings = settings_for(variant)
        folder = run_dir(output_dir, variant.name, seed, multiplier)
        if (folder / METRICS).exists() and not fresh:
            done = json.loads((folder / METRICS).read_text())
            check_same_settings(settings_of(done), settings, f"{folder} (finished)", names)
            skipped.append((variant, seed, multiplier, done["status"]))
            continue
        if (folder / SETTINGS).exists() and not fresh:  # interrupted: resume only alike
            check_same_settings(settings_of({"settings": json.loads((folder / SETTINGS).read_text())}),
                                settings,
                                f"{folder} (interrupted)", names)
        if fresh and folder.exists():
            shutil.rmtree(folder)
        todo.append((variant, seed, multiplier, folder))
    return todo, skipped


def start_run_folder(folder, settings):
    """Create a run's folder with its settings (kept as they were when resuming)."""
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / SETTINGS).exists():
        atomic_write(folder / SETTINGS, json.dumps(settings, indent=2) + "\n")


def write_metrics(folder, record):
    atomic_write(Path(folder) / METRICS, json.dumps(record, indent=2) + "\n")


def write_finished_run(folder, record, model, probabilities, labels, figure_data):
    """Everything a finished run keeps; metrics.json last, since it marks the run finished."""
    save_figure_data(folder, figure_data)
    model.save(folder / ".model.tmp.keras")  # Keras wants the .keras suffix
    os.replace(folder / ".model.tmp.keras", folder / MODEL)
    atomic_save_npz(folder / PREDICTIONS, probabilities=probabilities.astype(np.float32),
                    labels=labels)
    write_metrics(folder, record)


def load_predictions(folder):
    with np.load(Path(folder) / PREDICTIONS) as saved:
        return dict(saved)


def save_figure_data(folder, figure_data):
    atomic_save_npz(Path(folder) / FIGURE_DATA, **figure_data)


def load_figure_data(folder):
    """A run's figures.npz as a dict (UsageError when it is missing)."""
    path = Path(folder) / FIGURE_DATA
    if not path.exists():
        raise UsageError(f"{folder}: neither {FIGURE_DATA} nor {MODEL} is there to draw the "
                         "best run's figures from")
    with np.load(path) as saved:
        return dict(saved)
