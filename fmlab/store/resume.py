"""Resuming a run after any kill: its checkpoints, Keras' backup and the history rows (the
commit point) agree on the last finished epoch, and leftovers of an interrupted write go."""

import json
import os
import shutil
import time
from pathlib import Path

from fmlab.store.layout import BACKUP, CHECKPOINT_PATTERN, HISTORY, atomic_write, read_history

def checkpoint_path(run_dir, epoch):
    return Path(run_dir) / CHECKPOINT_PATTERN.format(epoch=epoch)


def checkpoint_epochs(run_dir):
    """1-based epochs that have a best-so-far checkpoint in run_dir."""
    return sorted(int(p.stem.removeprefix("best-epoch")) for p in Path(run_dir).glob("best-epoch*.keras"))


def best_logged_epoch(rows):
    """1-based epoch of the highest validation accuracy (the first, on ties: ModelCheckpoint
    only saves on a strict improvement)."""
    return 1 + max(range(len(rows)), key=lambda i: (rows[i]["val_accuracy"], -i))


def backup_epoch(metadata_path):
    """The epoch a BackupAndRestore metadata file records, or None when it is missing, empty
    or truncated (Keras writes it in place, so a kill can leave it so)."""
    try:
        epoch = json.loads(Path(metadata_path).read_text())["epoch"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return epoch if isinstance(epoch, int) and epoch >= 0 else None


def prepare_resume(run_dir, epochs):
    """Make a run folder consistent after an interruption at any moment; returns the history
    rows that are kept (empty: start over) and a note for the user, or None.

    Each epoch ends in this order (callbacks): the backup (weights, then
    training_metadata.json), the best-so-far checkpoint best-epochNNN.keras, the history row;
    then older checkpoints are deleted. The history row is the commit point. The invariant restored here:
    every kept row is covered by the backup Keras will restore (its epoch equals the number of
    kept rows), and the checkpoint of the best kept row exists -- so the checkpoint the run
    finally evaluates is one of its logged epochs. Checkpoints of epochs that are not kept
    are deleted; when no consistent state exists, the run starts over.
    """
    run_dir = Path(run_dir)
    history_path, backup = run_dir / HISTORY, run_dir / BACKUP
    rows, note = read_history(history_path), None
    if len(rows) >= epochs:
        keep = len(rows)  # training finished; only evaluation was interrupted
    else:
        main = backup_epoch(backup / "training_metadata.json")
        previous = backup_epoch(backup / "training_metadata.json.bkp")
        weights = (backup / "latest.weights.h5").exists()
        if main is not None and weights and main <= len(rows):
            keep = main
        elif previous is not None and (backup / "latest.weights.h5.bkp").exists() and previous <= len(rows):
            # killed while the newest backup was written: its predecessor is whole
            os.replace(backup / "latest.weights.h5.bkp", backup / "latest.weights.h5")
            os.replace(backup / "training_metadata.json.bkp", backup / "training_metadata.json")
            keep, note = previous, f"the newest backup in {backup} was incomplete; resuming from the one before"
        else:
            if backup.exists() and (main is None or not weights):
                note = f"the backup in {backup} is unreadable (killed while it was written?); this run starts over"
            keep = 0
        if keep == 0 and backup.exists():
            shutil.rmtree(backup)
    kept = rows[:keep]
    if kept and best_logged_epoch(kept) not in checkpoint_epochs(run_dir):
        note = f"the best checkpoint of {run_dir} is missing; this run starts over"
        kept = []
        shutil.rmtree(backup, ignore_errors=True)
    if len(kept) < len(rows):
        with open(history_path) as f:
            header = f.readline()
        atomic_write(history_path, header + "".join(
            ",".join(format_csv_value(r[k]) for k in header.strip().split(",")) + "\n" for r in kept))
    best = best_logged_epoch(kept) if kept else None
    for epoch in checkpoint_epochs(run_dir):
        if epoch != best:  # a checkpoint of an epoch that was not logged, or superseded
            checkpoint_path(run_dir, epoch).unlink()
    return kept, note


def remove_leftover_temp_files(folders, older_than=0.0):
    """Temp files of a killed process (every atomic write names them '.*.tmp*'): never read,
    removed so they do not pile up. Only in folders this process owns, or older than
    older_than seconds where another worker may be writing."""
    for folder in folders:
        for path in Path(folder).rglob(".*"):
            if (".tmp" in path.name and path.is_file()
                    and time.time() - path.stat().st_mtime >= older_than):
                path.unlink(missing_ok=True)


def format_csv_value(value):
    """A history value as CSVLogger writes it (whole numbers without a decimal point)."""
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else repr(value)
