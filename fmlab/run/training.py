"""How every run trains and is evaluated: one run from start to finish (its settings are
fmlab.run.recipe's Recipe).

    record = train_and_evaluate(variant, seed, data, recipe, strategy, run_dir)

train_and_evaluate reads top to bottom: reset and seed, datasets, model, callbacks, fit,
then the best checkpoint's test predictions, analysis and figure data, saved by run_store.
"""

import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from sklearn.metrics import classification_report, confusion_matrix, log_loss

from fmlab.core import environment
from fmlab.measures import model_analysis
from fmlab.store import run_store
from fmlab.run import tensorboard_hparams
from fmlab.run.data import CLASS_NAMES
from fmlab.run.pipeline import make_dataset
from fmlab.run.recipe import gpus
from fmlab.stats.factor_analysis import convergence_measures
from fmlab.core.levels import FACTORS, LEVELS
from fmlab.run.models import build_model, downsampling_params, trainable_params
from fmlab.run.training_callbacks import (ContinueDropoutMasks, EpochTimer, KeepBestCheckpointOnly,
                                Lookahead, NeverPositiveUnits, RecomputeBatchNormStatistics,
                                ShortProgress)


def distribution_strategy(distribute, logical_cpus=None):
    """MirroredStrategy when asked for, or for `auto` when more than one GPU is visible: over
    the GPUs, or over the logical CPUs (--logical-cpus, a testing aid, or no GPU at all);
    else the default single-device strategy."""
    if distribute == "mirrored" or (distribute == "auto" and len(gpus()) > 1):
        names = [] if logical_cpus else [d.name for d in tf.config.list_logical_devices("GPU")]
        return tf.distribute.MirroredStrategy(
            names or [d.name for d in tf.config.list_logical_devices("CPU")])
    return tf.distribute.get_strategy()


def make_optimizer(variant, steps_per_epoch, recipe, lr_multiplier=1.0):
    """Warm-up then cosine decay to zero over the recipe's epochs, peaking at the recipe's
    peak x lr_multiplier (a point of the learning-rate axis); Adam(W) or Nesterov SGD
    with momentum; with recipe.ema > 0, the optimizer also keeps an exponential moving
    average of the weights. Keras decays decoupled (w -= lr * weight_decay * w for both), so
    per step the weights shrink by lr x decay: 2.5e-5 at SGD's peak, 4e-7 at AdamW's."""
    peak = recipe.peak_lr(variant.optimizer) * lr_multiplier
    total_steps = recipe.epochs * steps_per_epoch
    warmup = min(round(recipe.warmup_epochs * steps_per_epoch), max(total_steps - 1, 0))
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else peak, warmup_target=peak if warmup else None,
        warmup_steps=warmup, decay_steps=max(total_steps - warmup, 1))
    averaging = dict(use_ema=True, ema_momentum=recipe.ema) if recipe.ema else {}
    return LEVELS["optimizer"][variant.optimizer].build(schedule, recipe, averaging)


def start_run(seed, precision):
    """Reset everything global a previous run may have left, then seed this run.

    clear_session() resets Keras' global state, the dtype policy included, so the policy is
    set after it, here, for each run (set once before the first run it silently fell back
    to float32). Op determinism (TensorFlow's, set once by the CLI) and the strategy (passed
    explicitly) are not touched by clear_session.
    """
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)  # Python, NumPy and TensorFlow
    keras.mixed_precision.set_dtype_policy(precision)


def compiled_model(variant, strategy, steps_per_epoch, recipe, lr_multiplier=1.0):
    """build_model + optimizer and loss, inside the strategy's scope. Under mixed_float16
    Keras wraps the optimizer in a LossScaleOptimizer; batch norm synchronises its batch
    statistics across replicas when there are several, so every replica (and the saved
    model) holds the same moving statistics. Label smoothing needs one-hot labels (Keras'
    sparse loss has no smoothing): make_dataset(one_hot=True)."""
    loss = (keras.losses.CategoricalCrossentropy(label_smoothing=recipe.label_smoothing)
            if recipe.label_smoothing else "sparse_categorical_crossentropy")
    with strategy.scope():
        model = build_model(variant, recipe.bn_momentum,
                            synchronized=strategy.num_replicas_in_sync > 1, bn_scale=recipe.bn_scale)
        if recipe.dirac_init:
            for name in ("conv2", "conv4"):  # the convolutions that keep their channel count
                kernel = model.get_layer(name).kernel
                kernel.assign(dirac_kernel(kernel.shape))
        model.compile(optimizer=make_optimizer(variant, steps_per_epoch, recipe, lr_multiplier),
                      loss=loss, metrics=["accuracy"])
    return model


def dirac_kernel(shape):
    """A (h, w, c, c) convolution kernel that passes every channel through unchanged."""
    h, w, channels_in, channels_out = shape
    kernel = np.zeros(shape, np.float32)
    kernel[h // 2, w // 2, np.arange(channels_in), np.arange(channels_out)] = 1.0
    return kernel


def training_callbacks(run_dir, recipe, x_train, best_so_far, x_probe, steps_done=0):
    """Keras' callbacks and the lab's, in the order that makes a kill at any moment
    recoverable (run_store.prepare_resume): backup and checkpoint, then the history row --
    the commit point -- and only then superseded checkpoints go. steps_done: the training
    steps of the epochs a resumed run restores (0 for a fresh one)."""
    return [
        EpochTimer(),  # first, so CSVLogger writes its "seconds" column
        keras.callbacks.TerminateOnNaN(),
        # the training state (with EMA: the raw weights, the averages inside the optimizer)
        keras.callbacks.BackupAndRestore(str(run_dir / run_store.BACKUP), double_checkpoint=True),
        ContinueDropoutMasks(steps_done),  # after the restore: the generators Keras' backup lacks
        # With EMA the averaged weights are validated and checkpointed: swapped in before each
        # validation (and batch norm's statistics then recomputed for them) and at each epoch's
        # end after the backup, swapped back when the next epoch begins.
        *([keras.callbacks.SwapEMAWeights(swap_on_epoch=True)] if recipe.ema else []),
        # before ModelCheckpoint sees the validation accuracy
        *([RecomputeBatchNormStatistics(x_train[:recipe.bn_stat_images])]
          if recipe.bn_stat_images else []),
        # the dying-unit curve, of the network as validated (recomputed statistics, EMA)
        NeverPositiveUnits(x_probe, model_analysis.UNIT_LAYERS),
        # initial_value_threshold: a resumed run must not forget the best epoch it already saw
        keras.callbacks.ModelCheckpoint(str(run_dir / run_store.CHECKPOINT_PATTERN),
                                        monitor="val_accuracy", mode="max", save_best_only=True,
                                        initial_value_threshold=best_so_far),
        keras.callbacks.CSVLogger(str(run_dir / run_store.HISTORY), append=True),
        KeepBestCheckpointOnly(run_dir),
        keras.callbacks.TensorBoard(str(run_dir / run_store.TENSORBOARD)),
        *([Lookahead(recipe.lookahead, recipe.lookahead_alpha)] if recipe.lookahead else []),
        ShortProgress(),  # fit's verbose decides whether and how it prints
    ]


def train_and_evaluate(variant, seed, data, recipe, strategy, run_dir, lr_multiplier=1.0,
                       precision_reason=""):
    """Train one run (resuming if it was interrupted), evaluate it, save everything; returns
    its record (what metrics.json holds). lr_multiplier: the run's point on the learning-rate
    axis (its peak is the recipe's x lr_multiplier); the recipe is the grid's;
    precision_reason: why the grid trains in recipe.precision (its environment block)."""
    start_run(seed, recipe.precision)
    run_store.start_run_folder(run_dir, dataclasses.asdict(recipe))
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = data["train"], data["val"], data["test"]
    one_hot = recipe.label_smoothing > 0
    past, note = run_store.prepare_resume(run_dir, recipe.epochs)  # non-empty only when resuming
    # The global batch is --batch-size on any number of replicas (each takes its share of a
    # step), so the experiment is the same on one device or eight; --scale-with-replicas
    # multiplies batch and learning rate instead (linear scaling rule), recorded in settings.
    # every epoch from one stream (a resumed run's starts at its first unfinished epoch)
    train_ds = make_dataset(x_train, y_train, recipe.global_batch, training=True, seed=seed,
                            translate=recipe.translate, random_erasing=recipe.random_erasing,
                            one_hot=one_hot, alternating_flips=recipe.alternating_flips,
                            epochs=recipe.epochs, start_epoch=len(past))
    val_ds = make_dataset(x_val, y_val, recipe.global_batch, training=False, seed=seed,
                          one_hot=one_hot)
    steps_per_epoch = math.ceil(len(x_train) / recipe.global_batch)
    model = compiled_model(variant, strategy, steps_per_epoch, recipe, lr_multiplier)
    if model.dtype_policy.name != recipe.precision:  # the policy recorded is the one trained with
        raise RuntimeError(f"model built with {model.dtype_policy.name}, not {recipe.precision}")

    probe = x_val[:model_analysis.UNIT_PROBE_IMAGES]  # the dying-unit images, every epoch
    if note:
        print(f"note: {note}", flush=True)
    best_so_far = max((r["val_accuracy"] for r in past), default=None)
    if len(past) < recipe.epochs:  # else killed while evaluating
        model.fit(train_ds, validation_data=val_ds, epochs=recipe.epochs, shuffle=False,  # the
                  callbacks=training_callbacks(run_dir, recipe, x_train, best_so_far,  # dataset
                                               probe, len(past) * steps_per_epoch),  # shuffles
                  verbose=1 if sys.stdout.isatty() else 2,  # one line per epoch in logs
                  steps_per_epoch=steps_per_epoch)  # one stream spans the remaining epochs

    evaluation_started = time.time()
    history = run_store.read_history(run_dir / run_store.HISTORY)
    record = {"name": variant.name, **variant.levels, "seed": seed,
              "lr_multiplier": lr_multiplier,
              "peak_lr": recipe.peak_lr(variant.optimizer) * lr_multiplier,
              "settings": dataclasses.asdict(recipe),
              "environment": environment.describe(tf, keras, strategy, recipe.precision,
                                                  model.jit_compile, precision_reason),
              "trainable_params": trainable_params(model),
              "downsampling_params": downsampling_params(model),
              "epochs_run": len(history),
              # summed over the epochs' rows, so it survives resumes
              "train_seconds": round(sum(r.get("seconds", 0.0) for r in history), 1)}
    best_epoch = run_store.best_logged_epoch(history) if history else None
    losses = [r["loss"] for r in history] + [r["val_loss"] for r in history]
    reason = None
    if not history or not np.all(np.isfinite(losses)):
        reason = "loss became NaN or inf (try a lower learning rate)"
    elif best_epoch not in run_store.checkpoint_epochs(run_dir):
        reason = (f"the checkpoint of its best epoch ({best_epoch}) is missing from {run_dir} "
                  "(rerun with --fresh to train it again)")
    if reason:
        record.update(status="failed", reason=reason)
        run_store.write_metrics(run_dir, record)
        return record

    model = keras.models.load_model(run_store.checkpoint_path(run_dir, best_epoch))
    probabilities = predict(model, x_test, recipe.batch_size, recipe.tta)
    best = history[best_epoch - 1]
    record.update(status="ok", best_epoch=best_epoch,
                  train_accuracy=best["accuracy"], train_loss=best["loss"],
                  val_accuracy=best["val_accuracy"], val_loss=best["val_loss"],
                  **convergence_measures(history),
                  **metrics_on_test_set(probabilities, y_test))
    record.update(generalization(model, x_train, y_train, record, recipe))
    units, record["never_positive_units"] = model_analysis.never_positive_units(model, probe)
    record["never_positive_images"] = len(probe)
    record["never_positive"] = {name: v["never_positive"] for name, v in units.items()}
    record = with_analysis_of(record, model, probabilities, x_test, y_test, recipe.shift_images)
    figures = model_analysis.figure_data(model, x_test, probabilities, y_test)
    # with train_seconds, a run's wall time even when its grid spans several sessions
    record["evaluation_seconds"] = round(time.time() - evaluation_started, 1)
    run_store.write_finished_run(run_dir, record, model, probabilities, y_test, figures)
    tensorboard_hparams.write_hparams(run_dir, record, variant.levels)
    return record


TRAIN_EVAL_IMAGES = 10_000  # training images re-scored in inference mode for the gap


def generalization(model, x_train, y_train, record, recipe):
    """The evaluated model on the first 10,000 training images, scored like the test set
    (inference mode, the same test-time averaging), and the gaps to the test set: accuracy
    (train - test) and loss (test - train). The training accuracy logged per epoch is
    not this: it is averaged over the epoch's steps, with dropout and flipped images."""
    x, y = x_train[:TRAIN_EVAL_IMAGES], y_train[:TRAIN_EVAL_IMAGES]
    probabilities = predict(model, x, recipe.batch_size, recipe.tta)
    accuracy = float((probabilities.argmax(axis=1) == y).mean())
    loss = float(log_loss(y, probabilities, labels=range(len(CLASS_NAMES))))
    return {"train_eval_accuracy": accuracy, "train_eval_loss": loss,
            "generalization_gap": accuracy - record["test_accuracy"],
            "loss_gap": record["test_loss"] - loss}


def metrics_on_test_set(probabilities, labels):
    """Accuracy, log loss, classification report and confusion matrix of test predictions."""
    predicted = probabilities.argmax(axis=1)
    classes = range(len(CLASS_NAMES))
    return dict(
        test_accuracy=float((predicted == labels).mean()),
        test_loss=float(log_loss(labels, probabilities, labels=classes)),
        classification_report=classification_report(
            labels, predicted, labels=classes, target_names=CLASS_NAMES, output_dict=True,
            digits=4, zero_division=0),
        confusion_matrix=confusion_matrix(labels, predicted, labels=classes).tolist())


def predict(model, x, batch_size, tta, translate=0):
    """Class probabilities; with tta, averaged with those of the mirrored images; with
    translate, also with those of every view shifted translate pixels up-left and down-right
    (zero fill)."""
    views = [x, x[:, :, ::-1]] if tta else [x]
    if translate:
        views += [model_analysis.shift_images(view, d * translate, d * translate)
                  for view in list(views) for d in (-1, 1)]
    return np.mean([model.predict(v, batch_size=batch_size, verbose=0) for v in views], axis=0)


def plain_predictor(model):
    return lambda x: model.predict(x, batch_size=512, verbose=0)


def with_analysis_of(record, model, probabilities, x_test, labels, shift_images):
    """The run record with its calibration and shift analysis (model_analysis), nested and
    as the flat metrics tables and statistics use."""
    analysis = model_analysis.analyse(plain_predictor(model), probabilities, x_test, labels,
                                      shift_images)
    return {**record, "analysis": analysis, **model_analysis.summary_metrics(analysis)}


def complete_saved_run(run, x_test):
    """A finished run with its analysis and figure data, computed from its saved model and
    predictions when missing or outdated (runs from before, merged folders) and cached in its
    folder, so a --report-only rebuild computes each only once. Runs kept without their model
    (a committed grid) are taken as they were recorded."""
    run_dir = Path(run["run_dir"])
    if run["status"] != "ok" or not (run_dir / run_store.MODEL).exists():
        return run
    settings = run_store.settings_of(run)
    x_test = x_test[:settings["test_images"]]  # the test images the run was evaluated on
    done = run.get("analysis", {})
    analysed = (done.get("version") == model_analysis.ANALYSIS_VERSION
                and done.get("shift_images") == min(settings["shift_images"], len(x_test)))
    drawn = (run_dir / run_store.FIGURE_DATA).exists()
    if analysed and drawn:
        return run
    model = keras.models.load_model(run_dir / run_store.MODEL)
    saved = run_store.load_predictions(run_dir)
    if not drawn:
        run_store.save_figure_data(run_dir, model_analysis.figure_data(
            model, x_test, saved["probabilities"], saved["labels"]))
    if analysed:
        return run
    record = with_analysis_of(json.loads((run_dir / run_store.METRICS).read_text()), model,
                              saved["probabilities"], x_test, saved["labels"],
                              settings["shift_images"])
    run_store.write_metrics(run_dir, record)
    tensorboard_hparams.write_hparams(run_dir, record, FACTORS)
    return {**run, **record}
