"""The tf.data pipeline that feeds training and evaluation: in memory, shuffled per epoch,
flipped (and, as recipe options, translated or erased) in training, prefetched."""

import math

import keras
import numpy as np
import tensorflow as tf

from fmlab.core.dataset_facts import CLASS_NAMES


def make_dataset(x, y, batch_size, training, seed, translate=0, random_erasing=0.0,
                 one_hot=False, alternating_flips=False, epochs=None, start_epoch=0):
    """tf.data pipeline: in memory, shuffled and augmented for training, prefetched.

    Augmentation runs per batch inside the pipeline, overlapping the training step: random
    horizontal flips (clothes are left-right symmetric: a free extra view of every image);
    with translate, random shifts of up to that many whole pixels per image, zero filled;
    with random_erasing P, a random rectangle of each image replaced by noise with
    probability P. Every random layer is seeded from seed, so a pipeline rebuilt with the
    same seed draws the same augmentations in the same order.
    one_hot: labels as one-hot rows, which label smoothing needs.

    epochs (training): one stream of that many passes, each reshuffled, for fit with
    steps_per_epoch -- read through a single iterator, so what each epoch sees depends on
    the seed and the epoch alone (fit on a one-pass dataset opens new iterators between
    epochs, each moving the shuffle's and the augmentations' generators on). start_epoch:
    the stream begins there, past the batches the earlier epochs drew, so a resumed run
    sees what an unbroken one would (skipping runs the augmentations: seconds per epoch).
    Without epochs: one pass (what evaluation and the benchmarks iterate).

    alternating_flips: instead of random flips, each image is mirrored in every other epoch
    (airbench's alternating flips; in which parity, drawn per image from the seed), so every
    two epochs see both views of it; the epoch number decides the flip.
    """
    if one_hot:
        y = keras.utils.to_categorical(y, len(CLASS_NAMES)).astype(np.float32)
    passes = epochs or 1
    if training and alternating_flips:
        images, labels = tf.constant(x), tf.constant(y)
        flipped_even = tf.constant(np.random.default_rng(seed).random(len(x)) < 0.5)

        def epoch(number):
            def batch_of(indices):  # a stateless shuffle of this epoch: positions -> images
                chosen = tf.random.experimental.index_shuffle(
                    indices, seed=tf.stack([tf.constant(seed, tf.int64), number]),
                    max_index=len(x) - 1)
                flip = tf.math.logical_xor(tf.gather(flipped_even, chosen), number % 2 == 1)
                batch = tf.gather(images, chosen)
                batch = tf.where(flip[:, None, None, None], batch[:, :, ::-1], batch)
                return batch, tf.gather(labels, chosen)
            return tf.data.Dataset.range(len(x)).batch(batch_size).map(batch_of)

        ds = augmented(tf.data.Dataset.range(passes).flat_map(epoch),
                       random_augmentations(translate, random_erasing, seed))
    else:
        ds = tf.data.Dataset.from_tensor_slices((x, y)).cache()
        if training:
            ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
        ds = ds.batch(batch_size)
        if training:
            ds = augmented(ds.repeat(passes), [keras.layers.RandomFlip("horizontal", seed=seed),
                                               *random_augmentations(translate, random_erasing, seed)])
    if start_epoch:
        ds = ds.skip(start_epoch * math.ceil(len(x) / batch_size))
    return ds.prefetch(tf.data.AUTOTUNE)


def augmented(ds, layers):
    """The batches through the augmentation layers, one batch after the other: the layers'
    seeded generators keep one state each, which parallel calls would advance in a racing
    order (augmentations that differ from one run of the same seed to the next). Prefetch
    still overlaps it with the step."""
    if not layers:
        return ds
    augment = keras.Sequential(layers, name="augment")
    return ds.map(lambda xb, yb: (augment(xb, training=True), yb))


def random_augmentations(translate, random_erasing, seed):
    """The Keras layers of the optional augmentations, in the order they apply."""
    layers = [random_translation(translate, seed)] if translate else []
    if random_erasing:  # Zhong et al. 2020 (who test on Fashion-MNIST): noise-filled patches
        layers.append(keras.layers.RandomErasing(factor=(random_erasing, random_erasing),
                                                 value_range=(0, 1), seed=seed))
    return layers


def random_translation(pixels, seed):
    """Keras' random shift of up to `pixels` whole pixels in each axis, zero filled."""
    return keras.layers.RandomTranslation(pixels / 28, pixels / 28, fill_mode="constant",
                                          interpolation="nearest", seed=seed)
