"""The model of a Variant (fmlab.run.variants): the lab's CNN, built with Keras.

    variant = Variant("relu", "strided", "adam")     # variant.name: CNN_ReLU_Strided_Adam
    model = build_model(variant)                       # functional Keras model, named layers
"""

import keras
import numpy as np
from keras import layers

from fmlab.core.levels import LEVELS
from fmlab.run.variants import MAX_TRAINABLE_PARAMS


def build_model(variant, bn_momentum=0.99, synchronized=False, bn_scale=True):
    """The CNN of one variant (see _build); its model-part factors (MODEL_PARTS) set the
    parts' keywords."""
    return _build(variant, bn_momentum, synchronized, bn_scale, **variant.parts())


def _build(variant, bn_momentum, synchronized, bn_scale, batchnorm=True, dropout=(0.25, 0.5),
           width=1):
    """The CNN of one variant, with named layers so figures can find them.

    Two conv blocks (32, 32 then 64, 64 filters, 3x3, 'same', each conv followed by batch
    norm and the activation), each ending in a downsampling (levels.LEVELS: 2x2 max or
    average pooling, or a learned 3x3 stride-2 convolution) and dropout 0.25. One more downsampling of the same kind
    takes 7x7 to 4x4 so that the flattened vector is 4*4*64 = 1024 and the 512-unit dense
    layer stays near 0.5M weights (at 7x7 it would be 1.6M and break the 1M budget).
    synchronized: batch statistics over all replicas (MirroredStrategy). bn_scale=False: batch
    norm without its learned scale (gamma fixed at 1). The model parts' keywords: batchnorm
    (False: none, the convolutions then keep their bias), dropout (conv, dense rates), width
    (the filters' multiplier).
    """

    def batch_norm(name):
        if not batchnorm:
            return layers.Identity(name=name)
        return layers.BatchNormalization(momentum=bn_momentum, synchronized=synchronized,
                                         scale=bn_scale, name=name)

    activation = LEVELS["activation"][variant.activation].build

    def conv_block(x, filters, name, strides=1, bn_name=None, act_name=None):
        # no bias: batch norm's beta does its job
        x = layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=not batchnorm,
                          name=name)(x)
        x = batch_norm(bn_name or f"{name}_bn")(x)
        return activation(act_name or f"{name}_act")(x)

    def downsample(x, filters, name):
        return LEVELS["downsampling"][variant.downsampling].build(x, filters, name, conv_block)

    inputs = keras.Input(shape=(28, 28, 1), name="image")
    x, conv = inputs, 0
    for block, filters in enumerate((round(32 * width), round(64 * width)), start=1):
        for _ in range(2):
            conv += 1
            x = conv_block(x, filters, f"conv{conv}", bn_name=f"bn{conv}", act_name=f"act{conv}")
        x = downsample(x, filters, f"down{block}")  # 28 -> 14 -> 7
        x = layers.Dropout(dropout[0], name=f"dropout{block}")(x)
    x = downsample(x, filters, "down3")  # 7x7x64 -> 4x4x64
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(512, name="dense")(x)
    x = activation("dense_act")(x)
    x = layers.Dropout(dropout[1], name="dense_dropout")(x)
    outputs = layers.Dense(10, activation="softmax", dtype="float32", name="softmax")(x)
    model = keras.Model(inputs, outputs, name=variant.name)
    n_params = trainable_params(model)
    if n_params >= MAX_TRAINABLE_PARAMS:
        raise ValueError(f"{variant.name} has {n_params:,} trainable parameters, "
                         f"over the budget of {MAX_TRAINABLE_PARAMS:,}")
    return model


def trainable_params(model):
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def downsampling_params(model):
    """Trainable parameters of the downsampling layers (down1-3 and, for strided
    convolutions, their batch norms): 0 for max pooling, which learns nothing."""
    return int(sum(np.prod(w.shape) for layer in model.layers if layer.name.startswith("down")
                   for w in layer.trainable_weights))
