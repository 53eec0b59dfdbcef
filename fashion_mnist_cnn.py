"""Which design choices make a small CNN good on Fashion-MNIST?

Trains one custom Keras CNN per combination of three design choices -- ReLU vs
LeakyReLU, max pooling vs strided convolution, Adam vs SGD with momentum -- on the
real Fashion-MNIST data, evaluates each on the test set and writes a results table
and figures to --output-dir.

    python fashion_mnist_cnn.py                       # all 8 variants, full data
    python fashion_mnist_cnn.py --quick               # a few minutes, same outputs
    python fashion_mnist_cnn.py --optimizer adam --activation relu --epochs 5
    python fashion_mnist_cnn.py --list-variants       # names and parameter counts
    python fashion_mnist_cnn.py --seeds 0 1 2         # every variant once per seed
    python fashion_mnist_cnn.py --shard 0/4           # the first of 4 slices (cluster array)
    python fashion_mnist_cnn.py --report-only         # redraw figures, no training
    python fashion_mnist_cnn.py --report-only a b --output-dir merged   # merge shard dirs

Runs are resumable: rerun the same command after an interruption and finished runs
are skipped, an interrupted run continues from its last finished epoch.
"""

import argparse
import dataclasses
import gzip
import itertools
import json
import math
import os
import shutil
import signal
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ banner out of logs

import environment  # noqa: E402  (imports no TensorFlow)

with environment.native_stderr_silenced():
    import keras
    import tensorflow as tf

    GPUS = tf.config.list_physical_devices("GPU")  # initialises the platform while muted
    for _gpu in GPUS:  # take GPU memory as needed, so several workers can share one GPU
        tf.config.experimental.set_memory_growth(_gpu, True)
import numpy as np  # noqa: E402
from keras import layers  # noqa: E402
from sklearn.metrics import classification_report, confusion_matrix, log_loss  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

import model_analysis  # noqa: E402
import report  # noqa: E402
import tensorboard_hparams  # noqa: E402
from run_store import (CHECKPOINT_PATTERN, RESULT_COLUMNS, DataError, LabError,  # noqa: E402,F401
                       UsageError, atomic_save_npz, atomic_write, backup_epoch, best_logged_epoch,
                       check_same_settings, checkpoint_epochs, checkpoint_path, finished_runs,
                       format_seconds, merged_runs, parse_shard, prepare_resume, read_history,
                       remove_leftover_temp_files, settings_of, shard_from_environment,
                       write_results_table)
from training_callbacks import (EpochTimer, KeepBestCheckpointOnly,  # noqa: E402,F401
                                RecomputeBatchNormStatistics)

CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
SYSTEM_DATA_DIR = Path("/usr/share/datasets/fashion-mnist")
IDX_FILES = {  # split -> (images file, labels file), the official names
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
SPLIT_SIZES = {"train": 60000, "test": 10000}
MAX_TRAINABLE_PARAMS = 1_000_000
FACTORS = {  # factor -> its two levels; the grid is their product
    "activation": ("relu", "leakyrelu"),
    "downsampling": ("maxpool", "strided"),
    "optimizer": ("adam", "sgd"),
}
DISPLAY = {"relu": "ReLU", "leakyrelu": "LeakyReLU", "maxpool": "MaxPool",
           "strided": "Strided", "adam": "Adam", "sgd": "SGD"}
LEAKY_SLOPE = 0.1        # LeakyReLU's negative slope (Keras' default 0.3 is unusually leaky)
# Peak of the warm-up + cosine schedule, per optimizer. AdamW's was 2e-3 until the ablation
# (benchmarks/README.md) found 4e-3 ahead in both seeds; SGD's 0.05 was not re-tuned.
PEAK_LR = {"adam": 4e-3, "sgd": 0.05}
EPOCHS = 12              # the default protocol (was 6 until the ablation; see the README)
WEIGHT_DECAY = {"adam": 1e-4, "sgd": 5e-4}  # decoupled weight decay (AdamW-style for Adam)
WARMUP_EPOCHS = 1        # linear warm-up before the cosine decay
BN_MOMENTUM = 0.99       # Keras' default; only shapes training once statistics are recomputed
BN_STAT_IMAGES = 2048    # training images whose statistics batch norm uses at validation/test
LABEL_SMOOTHING = 0.0    # share of each target spread over all classes (Szegedy et al. 2016)
EMA_MOMENTUM = 0.0       # weights averaged as in Polyak averaging (0: off); ~1/(1-m) steps
TRANSLATE_PIXELS = 0     # random shifts of up to N pixels per training image (0: flips only)
# --quick: same outputs in minutes, in a folder of their own (a smoke check, not results)
QUICK = dict(subset=4000, epochs=3, batch_size=32, shift_images=2000,
             output_dir=Path("results-quick"))
DATA_DIR_VARIABLE = "FASHION_MNIST_DIR"  # environment variable: a folder with the IDX files


# ----------------------------------------------------------------------------- data

def read_idx(path, expected_magic):
    """Read one IDX file (gzip or raw) into a uint8 array, checking its header and size."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            gz = f.read(2) == b"\x1f\x8b"
        raw = gzip.open(path).read() if gz else path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, EOFError) as e:  # truncated or corrupt gzip stream
        raise DataError(f"{path}: cannot decompress ({e})") from None
    if len(raw) < 8:
        raise DataError(f"{path}: too short for an IDX header ({len(raw)} bytes)")
    magic = int.from_bytes(raw[:4], "big")
    if magic != expected_magic:
        raise DataError(f"{path}: wrong magic number 0x{magic:08x}, expected 0x{expected_magic:08x}")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if len(raw) != header + math.prod(shape):
        raise DataError(f"{path}: size {len(raw)} bytes does not match header shape {shape} "
                        f"({header + math.prod(shape)} bytes); truncated or corrupt")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def find_idx_file(data_dir, stem):
    for name in (stem + ".gz", stem):
        if (Path(data_dir) / name).is_file():
            return Path(data_dir) / name
    raise DataError(f"{Path(data_dir) / (stem + '.gz')}: file not found (nor uncompressed {stem})")


def load_split(data_dir, split):
    """Images (N, 28, 28) uint8 and labels (N,) uint8 of one split, checked."""
    images_stem, labels_stem = IDX_FILES[split]
    images_path, labels_path = find_idx_file(data_dir, images_stem), find_idx_file(data_dir, labels_stem)
    images, labels = read_idx(images_path, 0x803), read_idx(labels_path, 0x801)
    if images.shape[1:] != (28, 28):
        raise DataError(f"{images_path}: images are {images.shape[1:]}, expected (28, 28)")
    if len(images) != SPLIT_SIZES[split]:
        raise DataError(f"{images_path}: {len(images)} images, expected {SPLIT_SIZES[split]}")
    if len(labels) != len(images):
        raise DataError(f"{labels_path}: {len(labels)} labels for {len(images)} images")
    if labels.max() >= len(CLASS_NAMES):
        raise DataError(f"{labels_path}: label {labels.max()} out of range 0-{len(CLASS_NAMES) - 1}")
    return images, labels


def load_fashion_mnist(data_dir=None):
    """(x_train, y_train), (x_test, y_test) as uint8, from the first source that has them.

    Look-up order: --data-dir, $FASHION_MNIST_DIR, the Debian package's folder, then Keras'
    cache/downloader. A folder given but holding bad files is an error, not a reason to look
    elsewhere.
    """
    for folder, what in ((data_dir, "--data-dir"), (os.environ.get(DATA_DIR_VARIABLE), DATA_DIR_VARIABLE)):
        if folder:
            if not Path(folder).is_dir():
                raise DataError(f"{folder}: {what} is not a folder")
            return load_split(folder, "train"), load_split(folder, "test")
    if SYSTEM_DATA_DIR.is_dir():
        return load_split(SYSTEM_DATA_DIR, "train"), load_split(SYSTEM_DATA_DIR, "test")
    try:
        return keras.datasets.fashion_mnist.load_data()
    except Exception as e:  # Keras raises several kinds for "offline"; all mean the same here
        cache = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets/fashion-mnist"
        raise DataError(
            f"no Fashion-MNIST data found: looked in {SYSTEM_DATA_DIR} and {cache}, and Keras' "
            f"download failed ({type(e).__name__}). Install it with "
            f"'apt-get install dataset-fashion-mnist', or pass --data-dir DIR (or set "
            f"{DATA_DIR_VARIABLE}=DIR) to a folder holding the four IDX files, or go online so "
            f"Keras can download it") from None


def prepare_data(data_dir, subset, val_fraction, seed):
    """Scaled (N, 28, 28, 1) float32 arrays: a stratified train/validation split and the test set."""
    (x_train, y_train), (x_test, y_test) = load_fashion_mnist(data_dir)
    if subset:
        x_train, _, y_train, _ = train_test_split(
            x_train, y_train, train_size=subset, stratify=y_train, random_state=seed)
    x_train, x_val, y_train, y_val = train_test_split(
        x_train, y_train, test_size=val_fraction, stratify=y_train, random_state=seed)
    return {"train": (scale_images(x_train), y_train.astype(np.int32)),
            "val": (scale_images(x_val), y_val.astype(np.int32)),
            "test": (scale_images(x_test), y_test.astype(np.int32))}


def prepare_test_images(data_dir):
    """The test images alone, scaled like prepare_data's, for the report's figures."""
    _, (x_test, _) = load_fashion_mnist(data_dir)
    return scale_images(x_test)


def scale_images(images):
    """uint8 (N, 28, 28) -> float32 (N, 28, 28, 1) in [0, 1]."""
    return (images.astype(np.float32) / 255.0)[..., None]


def make_dataset(x, y, batch_size, training, seed, translate=0, one_hot=False):
    """tf.data pipeline: in memory, shuffled and augmented for training, prefetched.

    Augmentation runs per batch inside the pipeline, overlapping the training step: random
    horizontal flips (clothes are left-right symmetric: a free extra view of every image)
    and, with translate, random shifts of up to that many whole pixels per image, zero
    filled. one_hot: labels as one-hot rows, which label smoothing needs.
    """
    if one_hot:
        y = keras.utils.to_categorical(y, len(CLASS_NAMES)).astype(np.float32)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).cache()
    if training:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if training:
        augment = [keras.layers.RandomFlip("horizontal", seed=seed)]
        if translate:
            augment.append(keras.layers.RandomTranslation(
                translate / 28, translate / 28, fill_mode="constant", interpolation="nearest",
                seed=seed))
        augment = keras.Sequential(augment, name="augment")
        ds = ds.map(lambda xb, yb: (augment(xb, training=True), yb), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


# ----------------------------------------------------------------------------- models

@dataclasses.dataclass(frozen=True, order=True)
class Variant:
    activation: str    # relu | leakyrelu
    downsampling: str  # maxpool | strided
    optimizer: str     # adam | sgd

    @property
    def name(self):
        return "CNN_" + "_".join(DISPLAY[v] for v in dataclasses.astuple(self))


def variant_grid(activations, downsamplings, optimizers):
    return [Variant(*levels) for levels in itertools.product(activations, downsamplings, optimizers)]


def build_model(variant, bn_momentum=BN_MOMENTUM, synchronized=False):
    """The CNN of one variant, with named layers so figures can find them.

    Two conv blocks (32, 32 then 64, 64 filters, 3x3, 'same', each conv followed by batch
    norm and the activation), each ending in a downsampling (2x2 max pooling or a learned
    3x3 stride-2 convolution) and dropout 0.25. One more downsampling of the same kind
    takes 7x7 to 4x4 so that the flattened vector is 4*4*64 = 1024 and the 512-unit dense
    layer stays near 0.5M weights (at 7x7 it would be 1.6M and break the 1M budget).
    synchronized: batch statistics over all replicas (MirroredStrategy).
    """

    def batch_norm(name):
        return layers.BatchNormalization(momentum=bn_momentum, synchronized=synchronized, name=name)

    def activation(name):
        if variant.activation == "relu":
            return layers.ReLU(name=name)
        return layers.LeakyReLU(negative_slope=LEAKY_SLOPE, name=name)

    def downsample(x, filters, name):
        if variant.downsampling == "maxpool":
            return layers.MaxPooling2D(2, padding="same", name=name)(x)
        x = layers.Conv2D(filters, 3, strides=2, padding="same", use_bias=False, name=name)(x)
        x = batch_norm(f"{name}_bn")(x)
        return activation(f"{name}_act")(x)

    inputs = keras.Input(shape=(28, 28, 1), name="image")
    x, conv = inputs, 0
    for block, filters in enumerate((32, 64), start=1):
        for _ in range(2):
            conv += 1
            # no bias: batch norm's beta does its job
            x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"conv{conv}")(x)
            x = batch_norm(f"bn{conv}")(x)
            x = activation(f"act{conv}")(x)
        x = downsample(x, filters, f"down{block}")  # 28 -> 14 -> 7
        x = layers.Dropout(0.25, name=f"dropout{block}")(x)
    x = downsample(x, 64, "down3")  # 7x7x64 -> 4x4x64
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(512, name="dense")(x)
    x = activation("dense_act")(x)
    x = layers.Dropout(0.5, name="dense_dropout")(x)
    outputs = layers.Dense(10, activation="softmax", dtype="float32", name="softmax")(x)
    model = keras.Model(inputs, outputs, name=variant.name)
    n_params = trainable_params(model)
    if n_params >= MAX_TRAINABLE_PARAMS:
        raise ValueError(f"{variant.name} has {n_params:,} trainable parameters, "
                         f"over the budget of {MAX_TRAINABLE_PARAMS:,}")
    return model


def trainable_params(model):
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def make_optimizer(variant, steps_per_epoch, recipe):
    """Warm-up then cosine decay to zero over the recipe's epochs; Adam(W) or Nesterov SGD
    with momentum 0.9; with recipe.ema > 0, the optimizer also keeps an exponential moving
    average of the weights. Keras decays decoupled (w -= lr * weight_decay * w for both), so
    per step the weights shrink by lr x decay: 2.5e-5 at SGD's peak, 4e-7 at AdamW's."""
    peak, total_steps = recipe.peak_lr(variant.optimizer), recipe.epochs * steps_per_epoch
    warmup = min(WARMUP_EPOCHS * steps_per_epoch, max(total_steps - 1, 0))
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else peak, warmup_target=peak if warmup else None,
        warmup_steps=warmup, decay_steps=max(total_steps - warmup, 1))
    averaging = dict(use_ema=True, ema_momentum=recipe.ema) if recipe.ema else {}
    if variant.optimizer == "adam":
        return keras.optimizers.AdamW(schedule, weight_decay=recipe.adamw_weight_decay, **averaging)
    return keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True,
                                weight_decay=WEIGHT_DECAY["sgd"], **averaging)


# ----------------------------------------------------------------------------- training

@dataclasses.dataclass(frozen=True)
class Recipe:
    """How every run of a grid trains and is evaluated: what makes two runs of a variant
    comparable. Stored with each run as settings.json (field order = column order of the
    report's settings table); a finished or interrupted run with another recipe is refused."""
    epochs: int = EPOCHS
    batch_size: int = 128          # the global batch, split between replicas
    subset: int | None = None      # train on a stratified sample of this many images
    val_fraction: float = 0.1
    precision: str = "float32"     # a Keras dtype policy ("auto" resolved)
    tta: bool = True               # test predictions averaged with the mirrored image
    lr_scale: float = 1.0          # --lr-scale, already applied to the peaks below
    replica_scaling: int = 1       # --scale-with-replicas: batch and peaks x replicas
    bn_momentum: float = BN_MOMENTUM
    bn_stat_images: int = BN_STAT_IMAGES
    shift_images: int = SPLIT_SIZES["test"]
    label_smoothing: float = LABEL_SMOOTHING
    ema: float = EMA_MOMENTUM
    translate: int = TRANSLATE_PIXELS
    adamw_weight_decay: float = WEIGHT_DECAY["adam"]
    adam_peak_lr: float = PEAK_LR["adam"]  # as trained with: the defaults changed over time
    sgd_peak_lr: float = PEAK_LR["sgd"]

    @classmethod
    def from_args(cls, args, replicas=1):
        """The recipe the command line asks for on `replicas` devices: precision "auto",
        --scale-with-replicas and --lr-scale resolved here, for every caller alike."""
        derived = {"precision": resolve_precision(args.precision),
                   "replica_scaling": replicas if args.scale_with_replicas else 1,
                   "adam_peak_lr": args.adam_peak_lr * args.lr_scale,
                   "sgd_peak_lr": args.sgd_peak_lr * args.lr_scale}
        chosen = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
                  if f.name not in derived}
        return cls(**chosen, **derived)

    @property
    def global_batch(self):
        return self.batch_size * self.replica_scaling

    def peak_lr(self, optimizer):
        """The peak a step of the (replica-scaled) global batch trains with."""
        return getattr(self, f"{optimizer}_peak_lr") * self.replica_scaling


def run_settings(args, replicas=1):
    """The recipe the arguments ask for, as stored with every run."""
    return dataclasses.asdict(Recipe.from_args(args, replicas))


def distribution_strategy(distribute, logical_cpus=None):
    """MirroredStrategy when asked for, or for `auto` when more than one GPU is visible: over
    the GPUs, or over the logical CPUs (--logical-cpus, a testing aid, or no GPU at all);
    else the default single-device strategy."""
    if distribute == "mirrored" or (distribute == "auto" and len(GPUS) > 1):
        gpus = [] if logical_cpus else [d.name for d in tf.config.list_logical_devices("GPU")]
        return tf.distribute.MirroredStrategy(
            gpus or [d.name for d in tf.config.list_logical_devices("CPU")])
    return tf.distribute.get_strategy()


def start_run(seed, precision):
    """Reset everything global a previous run may have left, then seed this run.

    clear_session() resets Keras' global state, the dtype policy included, so the policy is
    set after it, here, for each run (set once before the first run it silently fell back
    to float32). Op determinism (TensorFlow's, set once in main) and the strategy (passed
    explicitly) are not touched by clear_session.
    """
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)  # Python, NumPy and TensorFlow
    keras.mixed_precision.set_dtype_policy(precision)


def compiled_model(variant, strategy, steps_per_epoch, recipe):
    """build_model + optimizer and loss, inside the strategy's scope. Under mixed_float16
    Keras wraps the optimizer in a LossScaleOptimizer; batch norm synchronises its batch
    statistics across replicas when there are several, so every replica (and the saved
    model) holds the same moving statistics. Label smoothing needs one-hot labels (Keras'
    sparse loss has no smoothing): make_dataset(one_hot=True)."""
    loss = (keras.losses.CategoricalCrossentropy(label_smoothing=recipe.label_smoothing)
            if recipe.label_smoothing else "sparse_categorical_crossentropy")
    with strategy.scope():
        model = build_model(variant, recipe.bn_momentum,
                            synchronized=strategy.num_replicas_in_sync > 1)
        model.compile(optimizer=make_optimizer(variant, steps_per_epoch, recipe),
                      loss=loss, metrics=["accuracy"])
    return model


def train_and_evaluate(variant, seed, data, recipe, strategy, run_dir):
    """Train one run (resuming if it was interrupted), evaluate it, save everything."""
    start_run(seed, recipe.precision)
    run_dir.mkdir(parents=True, exist_ok=True)
    settings = dataclasses.asdict(recipe)
    if not (run_dir / "settings.json").exists():  # run_grid compares it when resuming
        atomic_write(run_dir / "settings.json", json.dumps(settings, indent=2) + "\n")
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = data["train"], data["val"], data["test"]
    # The global batch is --batch-size on any number of replicas (each takes its share of a
    # step), so the experiment is the same on one device or eight; --scale-with-replicas
    # multiplies batch and learning rate instead (linear scaling rule), recorded in settings.
    one_hot = recipe.label_smoothing > 0
    train_ds = make_dataset(x_train, y_train, recipe.global_batch, training=True, seed=seed,
                            translate=recipe.translate, one_hot=one_hot)
    val_ds = make_dataset(x_val, y_val, recipe.global_batch, training=False, seed=seed,
                          one_hot=one_hot)
    steps_per_epoch = math.ceil(len(x_train) / recipe.global_batch)
    model = compiled_model(variant, strategy, steps_per_epoch, recipe)
    if model.dtype_policy.name != recipe.precision:  # the policy recorded is the one trained with
        raise RuntimeError(f"model built with {model.dtype_policy.name}, not {recipe.precision}")
    history_path = run_dir / "history.csv"
    past, note = prepare_resume(run_dir, recipe.epochs)  # non-empty only when resuming
    if note:
        print(f"note: {note}", flush=True)
    best_so_far = max((r["val_accuracy"] for r in past), default=None)
    # Order matters for kill -9 at any moment (see prepare_resume): backup and checkpoint,
    # then the history row -- the commit point -- and only then superseded checkpoints go.
    callbacks = [
        EpochTimer(),  # first, so CSVLogger writes its "seconds" column
        keras.callbacks.TerminateOnNaN(),
        # the training state (with EMA: the raw weights, the averages inside the optimizer)
        keras.callbacks.BackupAndRestore(str(run_dir / "backup"), double_checkpoint=True),
        # With EMA the averaged weights are validated and checkpointed: swapped in before each
        # validation (and batch norm's statistics then recomputed for them) and at each epoch's
        # end after the backup, swapped back when the next epoch begins.
        *([keras.callbacks.SwapEMAWeights(swap_on_epoch=True)] if recipe.ema else []),
        # before ModelCheckpoint sees the validation accuracy
        *([RecomputeBatchNormStatistics(x_train[:recipe.bn_stat_images])]
          if recipe.bn_stat_images else []),
        # initial_value_threshold: a resumed run must not forget the best epoch it already saw
        keras.callbacks.ModelCheckpoint(str(run_dir / CHECKPOINT_PATTERN), monitor="val_accuracy",
                                        mode="max", save_best_only=True,
                                        initial_value_threshold=best_so_far),
        keras.callbacks.CSVLogger(str(history_path), append=True),
        KeepBestCheckpointOnly(run_dir),
        keras.callbacks.TensorBoard(str(run_dir / "tensorboard")),
    ]
    if len(past) < recipe.epochs:  # else killed while evaluating
        model.fit(train_ds, validation_data=val_ds, epochs=recipe.epochs, callbacks=callbacks,
                  shuffle=False,  # the dataset shuffles itself
                  verbose=1 if sys.stdout.isatty() else 2)  # one line per epoch in log files
    evaluation_started = time.time()
    history = read_history(history_path)
    train_seconds = sum(r.get("seconds", 0.0) for r in history)  # survives resumes
    record = {"name": variant.name, **dataclasses.asdict(variant), "seed": seed,
              "settings": settings,
              "environment": environment.describe(tf, keras, strategy, recipe.precision,
                                                  model.jit_compile),  # "auto" as resolved
              "trainable_params": trainable_params(model),
              "epochs_run": len(history), "train_seconds": round(train_seconds, 1)}
    losses = [r["loss"] for r in history] + [r["val_loss"] for r in history]
    best_epoch = best_logged_epoch(history) if history else None
    if not history or not np.all(np.isfinite(losses)) or best_epoch not in checkpoint_epochs(run_dir):
        record.update(status="failed", reason="loss became NaN or inf (try a lower learning rate)")
        atomic_write(run_dir / "metrics.json", json.dumps(record, indent=2) + "\n")
        return record

    model = keras.models.load_model(checkpoint_path(run_dir, best_epoch))
    probs = predict(model, x_test, recipe.batch_size, recipe.tta)
    y_pred = probs.argmax(axis=1)
    best = history[best_epoch - 1]
    class_report = classification_report(y_test, y_pred, target_names=CLASS_NAMES, output_dict=True,
                                   digits=4, zero_division=0)
    record.update(
        status="ok", best_epoch=best_epoch,
        train_accuracy=best["accuracy"], train_loss=best["loss"],
        val_accuracy=best["val_accuracy"], val_loss=best["val_loss"],
        test_accuracy=float((y_pred == y_test).mean()),
        test_loss=float(log_loss(y_test, probs, labels=range(10))),
        classification_report=class_report,
        confusion_matrix=confusion_matrix(y_test, y_pred, labels=range(10)).tolist())
    record = add_analysis(record, model, probs, x_test, y_test, recipe.shift_images)
    report.save_figure_data(run_dir, model, x_test, probs, y_test)  # the report needs no model
    # with train_seconds, a run's wall time even when its grid spans several sessions
    record["evaluation_seconds"] = round(time.time() - evaluation_started, 1)
    model_path = run_dir / "model.keras"
    model.save(run_dir / ".model.tmp.keras")
    os.replace(run_dir / ".model.tmp.keras", model_path)
    atomic_save_npz(run_dir / "predictions.npz", probabilities=probs.astype(np.float32), labels=y_test)
    atomic_write(run_dir / "metrics.json", json.dumps(record, indent=2) + "\n")  # marks it finished
    tensorboard_hparams.write_hparams(run_dir, record, FACTORS)
    return record


def plain_predictor(model):
    return lambda x: model.predict(x, batch_size=512, verbose=0)


def add_analysis(record, model, probabilities, x_test, labels, shift_images):
    """The run record with its calibration and shift analysis (model_analysis), nested and
    as the flat metrics tables and statistics use."""
    analysis = model_analysis.analyse(plain_predictor(model), probabilities, x_test, labels,
                                      shift_images)
    return {**record, "analysis": analysis, **model_analysis.summary_metrics(analysis)}


def with_analysis(run, x_test):
    """A finished run with its calibration and shift analysis and its figure data, computed
    from its saved model and predictions when missing or outdated (runs from before, merged
    folders) and cached in its folder, so a --report-only rebuild computes each only once.
    Runs kept without their model (a committed grid) are taken as they were recorded."""
    run_dir = Path(run["run_dir"])
    if run["status"] != "ok" or not (run_dir / "model.keras").exists():
        return run
    report.ensure_figure_data(run_dir, x_test, keras.models.load_model)
    done = run.get("analysis", {})
    if (done.get("version") == model_analysis.ANALYSIS_VERSION and
            done.get("shift_images") == settings_of(run)["shift_images"]):
        return run
    saved = np.load(run_dir / "predictions.npz")
    model = keras.models.load_model(run_dir / "model.keras")
    record = add_analysis(json.loads((run_dir / "metrics.json").read_text()), model,
                          saved["probabilities"], x_test, saved["labels"],
                          settings_of(run)["shift_images"])
    atomic_write(run_dir / "metrics.json", json.dumps(record, indent=2) + "\n")
    tensorboard_hparams.write_hparams(run_dir, record, FACTORS)
    return {**run, **record}


def predict(model, x, batch_size, tta):
    """Class probabilities; with tta, averaged with those of the mirrored images."""
    probs = model.predict(x, batch_size=batch_size, verbose=0)
    if tta:
        probs = (probs + model.predict(x[:, :, ::-1], batch_size=batch_size, verbose=0)) / 2
    return probs


# ----------------------------------------------------------------------------- CLI

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for factor, levels in FACTORS.items():
        p.add_argument(f"--{factor}", nargs="+", choices=levels, default=list(levels),
                       help=f"{factor} levels to include in the grid")
    p.add_argument("--epochs", type=positive_int, default=EPOCHS, help="training epochs per run")
    p.add_argument("--batch-size", type=positive_int, default=128, help="images per step")
    p.add_argument("--seeds", type=int, nargs="+", default=None, metavar="S",
                   help="repeat every variant once per seed; each seed fixes its run's data "
                        "split, initialisation and shuffling (default: 0)")
    p.add_argument("--seed", type=int, default=None, help="one seed: same as --seeds S")
    p.add_argument("--subset", type=positive_int, default=None,
                   help="train on a stratified sample of N training images (validation from it)")
    p.add_argument("--val-fraction", type=float, default=0.1, help="held-out validation share")
    p.add_argument("--adam-peak-lr", type=float, default=PEAK_LR["adam"], metavar="LR",
                   help="AdamW's peak learning rate (before --lr-scale)")
    p.add_argument("--sgd-peak-lr", type=float, default=PEAK_LR["sgd"], metavar="LR",
                   help="SGD's peak learning rate (before --lr-scale)")
    p.add_argument("--lr-scale", type=float, default=1.0, help="multiply both peak learning rates")
    p.add_argument("--bn-momentum", type=float, default=BN_MOMENTUM,
                   help="batch norm's moving-average momentum during training")
    p.add_argument("--bn-stat-images", type=int, default=BN_STAT_IMAGES, metavar="N",
                   help="before each validation, batch norm statistics are recomputed over N "
                        "training images (0: keep the moving averages)")
    p.add_argument("--adamw-weight-decay", type=float, default=WEIGHT_DECAY["adam"], metavar="WD",
                   help="AdamW's decoupled weight decay (SGD keeps 5e-4)")
    p.add_argument("--label-smoothing", type=float, default=LABEL_SMOOTHING, metavar="E",
                   help="train towards (1-E) on the true class and E/10 on every class")
    p.add_argument("--ema", type=float, default=EMA_MOMENTUM, metavar="M",
                   help="validate, checkpoint and test an exponential moving average of the "
                        "weights with momentum M per step (0: the weights themselves)")
    p.add_argument("--translate", type=int, default=TRANSLATE_PIXELS, metavar="PX",
                   help="shift training images by up to PX pixels at random (0: flips only)")
    p.add_argument("--shift-images", type=positive_int, default=SPLIT_SIZES["test"], metavar="N",
                   help="test images (the first N) shifted for the shift-robustness analysis; "
                        "6 passes over them cost ~20 s for all 10,000 on 2 cores")
    p.add_argument("--precision", choices=["auto", "float32", "mixed_bfloat16", "mixed_float16"],
                   default="auto", help="auto: mixed_float16 on a GPU, float32 on a CPU")
    p.add_argument("--no-tta", dest="tta", action="store_false",
                   help="no horizontal-flip averaging at test time")
    p.add_argument("--deterministic", action="store_true",
                   help="TensorFlow op determinism: bit-identical reruns, somewhat slower")
    p.add_argument("--data-dir", type=Path, default=None, help="folder with the four IDX files")
    p.add_argument("--output-dir", type=Path, default=Path("results"),
                   help="where results go (--quick: results-quick)")
    p.add_argument("--fresh", action="store_true", help="retrain runs that already finished")
    p.add_argument("--quick", action="store_true",
                   help="a few-minute smoke check of the pipeline with the same outputs (4,000 "
                        "training images, 3 epochs, batch 32, shifts of 2,000 test images) "
                        "in results-quick/")
    p.add_argument("--list-variants", action="store_true",
                   help="print the selected variants and their parameter counts, train nothing")
    p.add_argument("--report-only", nargs="*", type=Path, default=None, metavar="DIR",
                   help="no training: rebuild tables and figures from the finished runs of the "
                        "DIRs (default: --output-dir) into --output-dir")
    p.add_argument("--shard", type=parse_shard, default=None, metavar="I/N",
                   help="run only slice I (0 to N-1) of N disjoint slices of the (variant, seed) "
                        "runs; default: from SLURM_ARRAY_TASK_* or JOB_COMPLETION_INDEX")
    p.add_argument("--shard-count", type=positive_int, default=None, metavar="N",
                   help="number of slices when the index comes from JOB_COMPLETION_INDEX "
                        "(Kubernetes Indexed Job)")
    p.add_argument("--distribute", choices=["auto", "none", "mirrored"], default="auto",
                   help="mirrored: one run across the visible GPUs (tf.distribute.MirroredStrategy), "
                        "the global batch --batch-size split between them; auto: mirrored when >1 GPU")
    p.add_argument("--scale-with-replicas", action="store_true",
                   help="multiply batch size and peak learning rate by the number of replicas "
                        "(linear scaling: faster, but another experiment than on one device)")
    p.add_argument("--logical-cpus", type=positive_int, default=None, metavar="N",
                   help=argparse.SUPPRESS)  # testing aid: split the CPU into N devices to mirror on
    args = p.parse_args(argv)
    if args.seed is not None and args.seeds is not None:
        p.error("give --seed or --seeds, not both")
    args.seeds = [args.seed] if args.seed is not None else args.seeds or [0]
    if len(set(args.seeds)) != len(args.seeds):
        p.error(f"--seeds repeats a seed: {args.seeds}")
    if args.quick:
        for k, v in QUICK.items():
            if getattr(args, k) == p.get_default(k):
                setattr(args, k, v)
    if not 0 < args.val_fraction < 1:
        p.error("--val-fraction must be between 0 and 1")
    if args.subset is not None and not 10 * len(CLASS_NAMES) <= args.subset <= SPLIT_SIZES["train"]:
        p.error(f"--subset must be between {10 * len(CLASS_NAMES)} and {SPLIT_SIZES['train']}")
    if args.bn_stat_images < 0:
        p.error("--bn-stat-images must be 0 or more")
    if not 0 < args.bn_momentum < 1:
        p.error("--bn-momentum must be between 0 and 1")
    if min(args.lr_scale, args.adam_peak_lr, args.sgd_peak_lr) <= 0:
        p.error("--lr-scale, --adam-peak-lr and --sgd-peak-lr must be positive")
    if not 0 <= args.adamw_weight_decay < 1:
        p.error("--adamw-weight-decay must be at least 0 and below 1")
    if not 0 <= args.label_smoothing < 1:
        p.error("--label-smoothing must be at least 0 and below 1")
    if not 0 <= args.ema < 1:
        p.error("--ema must be at least 0 and below 1")
    if not 0 <= args.translate <= 14:
        p.error("--translate must be between 0 and 14 pixels")
    if args.output_dir.exists() and not args.output_dir.is_dir():
        p.error(f"--output-dir {args.output_dir} is a file, not a folder")
    return args


def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def resolve_precision(precision):
    if precision == "auto":
        precision = "mixed_float16" if GPUS else "float32"
    return precision


def describe_environment(args):
    """Where and how runs will train: backend, device, precision, XLA (what Keras'
    jit_compile="auto" resolves to on TensorFlow), replicas, versions. A run records the
    same facts with XLA as its compiled model resolved it."""
    jit = bool(GPUS) and args.strategy.num_replicas_in_sync == 1 and not args.deterministic
    return environment.describe(tf, keras, args.strategy, args.precision, jit)


def print_table(rows):
    print(f"\n{'variant':32} {'seed':>4} {'params':>8} {'epochs':>6} {'val acc':>8} {'test acc':>8} "
          f"{'test loss':>9} {'time':>7}")
    for r in rows:
        head = f"{r['name']:32} {r['seed']:>4} {r['trainable_params']:>8,}"
        if r["status"] != "ok":
            print(f"{head} {'FAILED':>6}")
            continue
        print(f"{head} {r['epochs_run']:>6} {r['val_accuracy']:>8.4f} {r['test_accuracy']:>8.4f} "
              f"{r['test_loss']:>9.4f} {format_seconds(r['train_seconds']):>7}")


def planned_runs(args):
    """Every (variant, seed) run the arguments select, in a fixed order, or this shard's slice
    of it: every N-th run from I, so slices are disjoint, cover the grid and take similar time."""
    variants = variant_grid(args.activation, args.downsampling, args.optimizer)
    runs = [(variant, seed) for seed in args.seeds for variant in variants]
    if args.shard:
        index, count = args.shard
        runs = runs[index::count]
    return runs


def run_grid(args):
    """Train every selected (variant, seed) run not yet finished; returns the failed ones."""
    recipe = Recipe.from_args(args, args.strategy.num_replicas_in_sync)
    settings = dataclasses.asdict(recipe)
    todo = []
    for variant, seed in planned_runs(args):
        run_dir = args.output_dir / "runs" / variant.name / f"seed{seed}"
        metrics_path = run_dir / "metrics.json"
        if metrics_path.exists() and not args.fresh:
            done = json.loads(metrics_path.read_text())
            check_same_settings(settings_of(done), settings, f"{run_dir} (finished)")
            print(f"skip {variant.name} seed {seed}: finished ({done['status']}), --fresh retrains it")
            continue
        if (run_dir / "settings.json").exists() and not args.fresh:  # interrupted: resume only alike
            check_same_settings(json.loads((run_dir / "settings.json").read_text()), settings,
                                f"{run_dir} (interrupted)")
        if args.fresh and run_dir.exists():
            shutil.rmtree(run_dir)
        todo.append((variant, seed, run_dir))
    if args.shard:  # other workers may share the dir: clean only its own run folders now,
        remove_leftover_temp_files([d for _, _, d in todo])  # and elsewhere only stale files
        remove_leftover_temp_files([args.output_dir], older_than=600)
    else:
        remove_leftover_temp_files([args.output_dir])
    if not todo:
        return []
    failed, started, data = [], time.time(), {}
    for i, (variant, seed, run_dir) in enumerate(todo, start=1):
        if seed not in data:  # each seed has its own train/validation split
            data = {seed: prepare_data(args.data_dir, recipe.subset, recipe.val_fraction, seed)}
            print(f"data (seed {seed}): {len(data[seed]['train'][0])} train, "
                  f"{len(data[seed]['val'][0])} validation, {len(data[seed]['test'][0])} test "
                  f"images", flush=True)
        elapsed = time.time() - started
        eta = f", ~{format_seconds(elapsed / (i - 1) * (len(todo) - i + 1))} left" if i > 1 else ""
        print(f"\n[{i}/{len(todo)}] {variant.name} seed {seed} "
              f"(elapsed {format_seconds(elapsed)}{eta})", flush=True)
        record = train_and_evaluate(variant, seed, data[seed], recipe, args.strategy, run_dir)
        if record["status"] != "ok":
            print(f"FAILED {variant.name} seed {seed}: {record['reason']}", flush=True)
            failed.append(record)
        else:
            print(f"{variant.name} seed {seed}: val {record['val_accuracy']:.4f}, test "
                  f"{record['test_accuracy']:.4f} in {format_seconds(record['train_seconds'])}",
                  flush=True)
        write_results_table(args.output_dir)
    return failed


def raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None):
    args = parse_args(argv)
    # Ctrl-C and kill (SIGTERM) stop cleanly, also where a shell started us with SIGINT
    # ignored (`cmd &` in a script): finished epochs and runs are on disk already.
    previous = {s: signal.signal(s, raise_interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        if args.logical_cpus:
            try:
                tf.config.set_logical_device_configuration(
                    tf.config.list_physical_devices("CPU")[0],
                    [tf.config.LogicalDeviceConfiguration()] * args.logical_cpus)
            except RuntimeError:
                raise UsageError("--logical-cpus works only before TensorFlow has started "
                                "(use it from the command line)") from None
        if args.list_variants:
            for v in variant_grid(args.activation, args.downsampling, args.optimizer):
                print(f"{v.name:32} {trainable_params(build_model(v)):>9,} trainable parameters")
            return 0
        args.output_dir.mkdir(parents=True, exist_ok=True)
        if not os.access(args.output_dir, os.W_OK):
            raise UsageError(f"{args.output_dir}: --output-dir is not writable")
        if args.deterministic:  # TensorFlow-wide, before any compile(); clear_session keeps it
            tf.config.experimental.enable_op_determinism()
        args.precision = resolve_precision(args.precision)  # for the start line, as Recipe does
        args.strategy = distribution_strategy(args.distribute, args.logical_cpus)
        replicas = args.strategy.num_replicas_in_sync
        if args.batch_size < replicas:
            raise UsageError(f"--batch-size {args.batch_size} is smaller than the {replicas} "
                             "replicas it is split between")
        warning = environment.gpu_mismatch_warning(len(GPUS))
        if warning:
            print(warning, file=sys.stderr)
        print(environment.summary_line(describe_environment(args)), flush=True)
        if args.report_only is not None:
            failed, runs = [], merged_runs(args.report_only or [args.output_dir])
        else:
            args.shard = shard_from_environment(args.shard, args.shard_count, os.environ)
            failed = run_grid(args)
            runs = finished_runs(args.output_dir)
        sharded = args.report_only is None and args.shard
        if not runs and not sharded:  # a shard may share a folder nobody has finished in yet
            raise UsageError(f"{args.output_dir}: no finished runs to report")
        if sharded:
            print_table(write_results_table(args.output_dir))
            print(f"\nshard {args.shard[0]}/{args.shard[1]} done. When every shard is: "
                  f"python fashion_mnist_cnn.py --report-only DIR [DIR ...] --output-dir OUT")
            return 1 if failed else 0
        x_test = prepare_test_images(args.data_dir)
        runs = [with_analysis(run, x_test) for run in runs]  # cached per run after the first time
        print_table(write_results_table(args.output_dir, runs))
        tensorboard_hparams.write_hparams_config(args.output_dir, runs, FACTORS)
        report.write_report(args.output_dir, runs, keras.models.load_model, x_test,
                                         CLASS_NAMES, FACTORS, DISPLAY)
        print(f"\nresults in {args.output_dir}/ (results.csv, report.html, figures)")
        if failed:
            print(f"{len(failed)} run(s) failed: {', '.join(r['name'] for r in failed)}", file=sys.stderr)
            return 1
        return 0
    except LabError as e:  # DataError, UsageError: the user can fix it
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: finished runs and the last finished epoch are saved; "
              "rerun the same command to resume", file=sys.stderr)
        return 130
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
