"""The runner's own Keras callbacks: epoch timing, a short progress line, the dropout masks
of a resumed run continued, batch norm statistics recomputed before each validation, and
pruning of superseded best-so-far checkpoints. The runner orders them
with Keras' own (ModelCheckpoint, BackupAndRestore, CSVLogger, TensorBoard); the order is
what makes a kill at any moment recoverable (run_store.prepare_resume).
"""

import time

import keras
import numpy as np
from keras import layers

from fmlab.measures.model_analysis import activation_probe, never_positive_shares
from fmlab.store.run_store import checkpoint_epochs, checkpoint_path


class EpochTimer(keras.callbacks.Callback):
    """Adds each epoch's wall time to the logs, and so to history.csv."""

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.time()

    def on_epoch_end(self, epoch, logs=None):
        logs["seconds"] = time.time() - self.started


class ShortProgress(keras.callbacks.ProgbarLogger):
    """Keras' progress line without the per-layer dying-unit shares (never_positive_*: five
    numbers per epoch, kept in history.csv): loss, accuracy, their validation twins, seconds."""

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, {k: v for k, v in (logs or {}).items()
                                     if not k.startswith("never_positive_")})


class ContinueDropoutMasks(keras.callbacks.Callback):
    """After BackupAndRestore has restored a resumed run (place it after that callback): moves
    every random layer's generator (dropout) past the masks the finished epochs drew.

    Why: Keras' backup holds the weights and the optimizer, not the layers' seed generators,
    so without this a run resumed after N epochs would draw its first epochs' masks again --
    on the same images in the same order, which training accuracy then partly memorises. A
    generator's counter advances by one per training step, so it is moved by the steps the
    restored epochs took; a fresh run (steps_done 0) is left alone."""

    def __init__(self, steps_done):
        super().__init__()
        self.steps_done = steps_done

    def on_train_begin(self, logs=None):
        for layer in self.model.layers:
            generator = getattr(layer, "seed_generator", None)
            if self.steps_done and isinstance(generator, keras.random.SeedGenerator):
                state = keras.ops.convert_to_numpy(generator.state)
                generator.state.assign(state + np.array([0, self.steps_done], state.dtype))


class RecomputeBatchNormStatistics(keras.callbacks.Callback):
    """Before each validation pass, set every batch norm layer's moving mean and variance to
    the statistics of its input over a fixed sample of training images, computed in
    inference mode layer by layer (each layer sees its predecessors' new statistics, and no
    dropout) -- what the network will compute at test time.

    Why: the moving averages (momentum 0.99) need thousands of steps to forget their initial
    values, so short runs evaluated near chance level; recomputed statistics are right after
    any number of steps ("precise BN", Wu & Johnson 2021, Rethinking "Batch" in BatchNorm).
    """

    def __init__(self, images):
        super().__init__()
        self.images = images

    def on_train_begin(self, logs=None):
        norms = [layer for layer in self.model.layers
                 if isinstance(layer, layers.BatchNormalization)]
        # per image and channel: the mean of x and of x^2 over the spatial positions
        self.probes = [(bn, keras.Model(self.model.inputs[0], [
            keras.ops.mean(keras.ops.cast(bn.input, "float32"), axis=(1, 2)),
            keras.ops.mean(keras.ops.square(keras.ops.cast(bn.input, "float32")), axis=(1, 2))]))
            for bn in norms]

    def on_test_begin(self, logs=None):
        for bn, probe in self.probes:  # in order: later probes see the new statistics
            # called eagerly in chunks: predict() would trace a function per probe and run
            moments = [probe(self.images[i:i + 512], training=False)
                       for i in range(0, len(self.images), 512)]
            mean_x, mean_x2 = (np.concatenate([np.asarray(m[k]) for m in moments]) for k in (0, 1))
            mean = mean_x.astype(np.float64).mean(axis=0)
            variance = np.maximum(mean_x2.astype(np.float64).mean(axis=0) - mean ** 2, 0.0)
            bn.moving_mean.assign(mean.astype(np.float32))
            bn.moving_variance.assign(variance.astype(np.float32))


class NeverPositiveUnits(keras.callbacks.Callback):
    """At each epoch's end, adds per probed activation layer the share of its units that are
    never positive on a fixed set of images (model_analysis.never_positive_shares) to the
    logs, and so to history.csv as never_positive_<layer>: the dying-unit curve. Placed after
    the batch norm statistics are recomputed, it measures the network that was validated."""

    def __init__(self, images, layer_names):
        super().__init__()
        self.images, self.layer_names = images, layer_names

    def on_train_begin(self, logs=None):
        self.probe = activation_probe(self.model, self.layer_names)

    def on_epoch_end(self, epoch, logs=None):
        for name, share in zip(self.layer_names, never_positive_shares(self.probe, self.images)):
            logs[f"never_positive_{name}"] = share


class KeepBestCheckpointOnly(keras.callbacks.Callback):
    """After an epoch's history row is written, delete the superseded best-so-far checkpoints
    (ModelCheckpoint saves only on improvement, so the newest is the best)."""

    def __init__(self, run_dir):
        super().__init__()
        self.run_dir = run_dir

    def on_epoch_end(self, epoch, logs=None):
        for old in checkpoint_epochs(self.run_dir)[:-1]:
            checkpoint_path(self.run_dir, old).unlink(missing_ok=True)


class Lookahead(keras.callbacks.Callback):
    """Lookahead (Zhang et al. 2019, "Lookahead Optimizer: k steps forward, 1 step back"):
    the optimizer updates fast weights; every k steps slow weights move alpha of the way
    towards them, and the fast weights restart from the slow ones. Trainable weights only
    (batch norm's statistics are recomputed anyway). A resumed run starts its slow weights
    from the restored ones."""

    def __init__(self, k, alpha):
        super().__init__()
        self.k, self.alpha = k, alpha

    def on_train_begin(self, logs=None):
        self.slow = [np.array(w.numpy(), dtype=np.float32) for w in self.model.trainable_weights]
        self.steps = 0

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        if self.steps % self.k:
            return
        for slow, weight in zip(self.slow, self.model.trainable_weights):
            slow += self.alpha * (weight.numpy() - slow)
            weight.assign(slow)
