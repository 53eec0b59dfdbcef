"""Where runs live on disk: atomic writes, resumable histories, the combined results table.

Every run of the grid owns one folder, OUTPUT_DIR/runs/<variant>/seed<S>/, and is finished
when its metrics.json exists. Nothing here knows about models: the runner trains, this
module makes what it writes survive kill -9 and lets several workers share one folder.
"""

import contextlib
import csv
import fcntl
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np


class DataError(Exception):
    """Bad input -- missing or malformed data, folders, settings, shard environment; the
    message names the file or setting and what is wrong (exit code 2)."""


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


RESULT_COLUMNS = ["name", "activation", "downsampling", "optimizer", "seed", "status",
                  "trainable_params", "epochs_run", "best_epoch", "train_accuracy", "train_loss",
                  "val_accuracy", "val_loss", "test_accuracy", "test_loss", "train_seconds"]


def resumable_history(run_dir, epochs):
    """History rows a resumed run can build on: those the backup covers (or all, when training
    completed and the backup was removed). Rows of an epoch killed before its backup are
    dropped, since that epoch is trained again."""
    history_path, metadata = run_dir / "history.csv", run_dir / "backup" / "training_metadata.json"
    rows = read_history(history_path)
    if len(rows) >= epochs and (run_dir / "best.keras").exists():
        return rows  # training finished; only evaluation was interrupted
    backed_up = json.loads(metadata.read_text())["epoch"] if metadata.exists() else 0
    kept = [r for r in rows if r["epoch"] < backed_up]
    if len(kept) < len(rows) or (rows and not kept):
        with open(history_path) as f:
            header = f.readline()
        atomic_write(history_path, header + "".join(
            ",".join(format_csv_value(r[k]) for k in header.strip().split(",")) + "\n" for r in kept))
    if not kept:
        (run_dir / "best.keras").unlink(missing_ok=True)  # from an epoch that is not kept
    return kept


def format_csv_value(value):
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else repr(value)


def run_order(run):
    """Tables list finished runs best validation accuracy first, failed runs last."""
    return (run["status"] != "ok", -(run.get("val_accuracy") or 0), run["name"], run["seed"])


def finished_runs(output_dir):
    """metrics.json of every finished (or failed) run under output_dir/runs, best first."""
    runs = []
    for path in Path(output_dir).glob("runs/*/seed*/metrics.json"):
        run = json.loads(path.read_text())
        run.update(run_dir=str(path.parent), history=read_history(path.parent / "history.csv"))
        runs.append(run)
    return sorted(runs, key=run_order)


def settings_of(run):
    # settings added later, at the value that runs from before they existed had
    return {"replicas": 1, "bn_momentum": 0.99, **run.get("settings", {})}


def merged_runs(output_dirs):
    """The finished runs of several output dirs (shards of one grid) as one list. A run found
    in two dirs is kept once if both copies agree and refused if they differ; runs trained
    with different settings are refused, since their numbers are not comparable."""
    by_key = {}
    for folder in dict.fromkeys(Path(d).resolve() for d in output_dirs):
        if not folder.is_dir():
            raise DataError(f"{folder}: no such folder to report from")
        for run in finished_runs(folder):
            key = (run["name"], run["seed"])
            if key not in by_key:
                by_key[key] = run
            elif (by_key[key]["status"], by_key[key].get("test_accuracy")) != (
                    run["status"], run.get("test_accuracy")):
                raise DataError(f"{run['name']} seed {run['seed']} is in {by_key[key]['run_dir']} "
                                f"and {run['run_dir']} with different results; remove one")
            else:
                print(f"note: {run['name']} seed {run['seed']} is in two folders (same results); "
                      f"using {by_key[key]['run_dir']}")
    settings = {json.dumps(settings_of(r), sort_keys=True): r for r in by_key.values()}
    if len(settings) > 1:
        examples = "; ".join(f"{r['run_dir']}: {s}" for s, r in settings.items())
        raise DataError(f"runs with different settings cannot share one report ({examples})")
    return sorted(by_key.values(), key=run_order)


def remove_leftover_temp_files(folders, older_than=0.0):
    """Temp files of a killed process (every atomic write names them '.*.tmp*'): never read,
    removed so they do not pile up. Only in folders this process owns, or older than
    older_than seconds where another worker may be writing."""
    for folder in folders:
        for path in Path(folder).rglob(".*"):
            if (".tmp" in path.name and path.is_file()
                    and time.time() - path.stat().st_mtime >= older_than):
                path.unlink(missing_ok=True)


def write_results_table(output_dir, runs=None):
    """Write results.csv/json of `runs` (default: every finished run in output_dir, read under
    the lock, so two workers finishing at once both end up in the table)."""
    output_dir = Path(output_dir)
    with open(output_dir / ".results.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        runs = finished_runs(output_dir) if runs is None else runs
        rows = [{k: run.get(k) for k in RESULT_COLUMNS} for run in runs]
        atomic_write(output_dir / "results.json", json.dumps(rows, indent=2) + "\n")
        with tempfile.SpooledTemporaryFile(mode="w+") as buf:
            writer = csv.DictWriter(buf, RESULT_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
            buf.seek(0)
            atomic_write(output_dir / "results.csv", buf.read())
    return rows
