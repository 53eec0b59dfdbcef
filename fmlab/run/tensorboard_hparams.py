"""Runs as sessions of TensorBoard's HParams dashboard (`tensorboard --logdir OUTPUT_DIR/runs`).

Each finished run writes its factors, seed and settings as hyperparameters and its final
metrics as scalars into its own run_dir/tensorboard; the dashboard's column list is written
once, at OUTPUT_DIR/runs, whenever the report is rebuilt.
"""

from pathlib import Path

import tensorflow as tf

from fmlab.measures.model_analysis import ECE_BINS
from fmlab.store.run_store import TENSORBOARD, runs_folder

METRICS = {"val_accuracy": "validation accuracy (best epoch)", "test_accuracy": "test accuracy",
           "test_loss": "test loss (NLL)", "ece": f"test ECE ({ECE_BINS} bins)",
           "shift_consistency": "shift consistency",
           "never_positive_units": "units never positive", "generalization_gap": "train - test accuracy"}


def write_hparams(run_dir, record, factors):
    """The run as one HParams session, in run_dir/tensorboard."""
    from tensorboard.plugins.hparams import api as hp  # here: most runner starts write none
    hparams = {**{f: record[f] for f in factors}, "seed": record["seed"],
               "lr_multiplier": record.get("lr_multiplier", 1.0),
               **{k: v for k, v in record["settings"].items() if v is not None}}
    with tf.summary.create_file_writer(str(Path(run_dir) / TENSORBOARD)).as_default():
        hp.hparams(hparams, trial_id=f"{Path(run_dir).parent.name}/seed{record['seed']}")
        for key in METRICS:
            if record.get(key) is not None:
                tf.summary.scalar(key, record[key], step=record.get("best_epoch") or 0)
        tf.summary.flush()


def write_hparams_config(output_dir, runs, factors):
    """The dashboard's column list, once at OUTPUT_DIR/runs (TensorBoard's logdir)."""
    from tensorboard.plugins.hparams import api as hp

    logdir = runs_folder(output_dir)
    if not logdir.is_dir():
        return
    for old in logdir.glob("events.out.tfevents.*"):  # one configuration, the current one
        old.unlink()
    hparams = [hp.HParam(f, hp.Discrete(list(levels))) for f, levels in factors.items()]
    hparams.append(hp.HParam("seed", hp.Discrete(sorted({r["seed"] for r in runs}))))
    hparams.append(hp.HParam("lr_multiplier", hp.Discrete(
        sorted({float(r.get("lr_multiplier", 1.0)) for r in runs}))))
    with tf.summary.create_file_writer(str(logdir)).as_default():
        hp.hparams_config(hparams=hparams, metrics=[hp.Metric(k, display_name=v)
                                                    for k, v in METRICS.items()])
        tf.summary.flush()
