"""The run folder's layout: where a grid's runs live and what each file is called, and the
writes that survive kill -9 (temp file, fsync, rename).

Every run owns one folder, OUTPUT_DIR/runs/<variant>/seed<S>/ (run_dir; at a learning-rate
multiplier M other than 1, OUTPUT_DIR/runs/<variant>_lrx<M>/seed<S>/), and is finished when
its metrics.json exists; this module alone names the files in it.
"""

import contextlib
import csv
import os
import tempfile
from pathlib import Path

import numpy as np

RUNS = "runs"  # OUTPUT_DIR/runs: every run folder of a grid (and TensorBoard's logdir)
# The files of a run folder
SETTINGS = "settings.json"        # the Recipe, written when the run starts
HISTORY = "history.csv"           # one row per finished epoch (CSVLogger): the commit point
METRICS = "metrics.json"          # the record of a finished (or failed) run, written last
MODEL = "model.keras"             # the evaluated model
PREDICTIONS = "predictions.npz"   # test probabilities and labels
FIGURE_DATA = "figures.npz"       # what the best run's model-dependent figures draw
BACKUP = "backup"                 # BackupAndRestore's folder
TENSORBOARD = "tensorboard"
CHECKPOINT_PATTERN = "best-epoch{epoch:03d}.keras"  # Keras fills in the 1-based epoch
# OUTPUT_DIR/tuning.json: a --tune-lr study's protocol, the variants whose sweep grows beyond
# its starting points (absent: every variant's does)
TUNING = "tuning.json"


def runs_folder(output_dir):
    return Path(output_dir) / RUNS


def run_dir(output_dir, name, seed, lr_multiplier=1.0):
    folder = name if lr_multiplier == 1 else f"{name}_lrx{lr_multiplier:g}"
    return runs_folder(output_dir) / folder / f"seed{seed}"


def metrics_paths(output_dir, seed="*"):
    """metrics.json of every finished run in output_dir (of one seed if given)."""
    return sorted(runs_folder(output_dir).glob(f"*/seed{seed}/{METRICS}"))


def lr_multiplier_of(run):
    """A run's point on the learning-rate axis (runs from before the axis: 1)."""
    return run.get("lr_multiplier", 1.0)


def device_of(run):
    """The machine a run trained on, as its record names it (None for a record without one)."""
    return (run.get("environment") or {}).get("device")


def run_key(run):
    """What identifies a run within a grid: variant, learning-rate multiplier, seed."""
    return run["name"], lr_multiplier_of(run), run["seed"]


def temp_file_beside(path, prefix, suffix):
    """mkstemp in path's folder, with the permissions open() would give (mkstemp's are 0600,
    which would hide results from the rest of a shared group)."""
    umask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(umask)
    fd, tmp = tempfile.mkstemp(dir=Path(path).parent, prefix=prefix, suffix=suffix)
    os.fchmod(fd, 0o666 & ~umask)
    return fd, tmp


def atomic_write(path, text):
    """Write text to path via a temp file, fsync and rename: never a half-written file."""
    path = Path(path)
    fd, tmp = temp_file_beside(path, f".{path.name}.", ".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_save_npz(path, **arrays):
    fd, tmp = temp_file_beside(path, ".pred.", ".tmp.npz")
    with os.fdopen(fd, "wb") as f:
        np.savez_compressed(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_history(path):
    """Per-epoch rows of CSVLogger's file; after a resume an epoch may repeat: keep the last."""
    if not Path(path).exists():
        return []
    with open(path) as f:
        rows = {int(r["epoch"]): {k: float(v) for k, v in r.items()} for r in csv.DictReader(f)}
    return [rows[e] for e in sorted(rows)]
