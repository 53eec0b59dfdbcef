"""Every level of every design choice, defined in one place.

A level has its name (the CLI's and the run folders'), its display name, how it builds (an
activation layer, a downsampling block, an optimizer) and how figures draw it (activations
by marker, downsamplings by line style, optimizers by colour). Everything else asks this
registry; an unknown level is refused, never replaced by another.

    LEVELS["activation"]["gelu"].build("act1")        # a keras.layers.Activation("gelu")
    python fashion_mnist_cnn.py --activation relu gelu --downsampling maxpool avgpool

To add a level: one entry here (and, for an optimizer, its peak learning rate in the Recipe).
No Keras at import time: the report reads names and styles without loading TensorFlow.
"""

import dataclasses

LEAKY_SLOPE = 0.1  # LeakyReLU's negative slope (Keras' default 0.3 is unusually leaky)


@dataclasses.dataclass(frozen=True)
class Level:
    name: str
    display: str
    build: object     # activation: f(name); downsampling: f(x, filters, name, conv_block);
    #                   optimizer: f(schedule, recipe, averaging)
    style: object     # marker (activation), line style (downsampling), colour (optimizer)
    long_name: str = ""  # what a figure's title calls it, where the display name is too terse

    @property
    def described(self):
        return self.long_name or self.display


def _layer(kind, **options):
    def build(name):
        from keras import layers
        return getattr(layers, kind)(name=name, **options)
    return build


def _pooling(kind):
    def build(x, filters, name, conv_block):
        from keras import layers
        return getattr(layers, kind)(2, padding="same", name=name)(x)
    return build


def _strided(x, filters, name, conv_block):
    """A learned 3x3 stride-2 convolution, with batch norm and the activation like any conv."""
    return conv_block(x, filters, name, strides=2)


def _adamw(schedule, recipe, averaging):
    import keras
    return keras.optimizers.AdamW(schedule, weight_decay=recipe.adamw_weight_decay, **averaging)


def _sgd(schedule, recipe, averaging):
    import keras
    return keras.optimizers.SGD(schedule, momentum=recipe.sgd_momentum, nesterov=True,
                                weight_decay=recipe.sgd_weight_decay, **averaging)


LEVELS = {  # factor -> {level: Level}, the reference level (the first) compared against
    "activation": {
        "relu": Level("relu", "ReLU", _layer("ReLU"), "o"),
        "leakyrelu": Level("leakyrelu", "LeakyReLU",
                           _layer("LeakyReLU", negative_slope=LEAKY_SLOPE), "^"),
        "gelu": Level("gelu", "GELU", _layer("Activation", activation="gelu"), "s"),
    },
    "downsampling": {
        "maxpool": Level("maxpool", "MaxPool", _pooling("MaxPooling2D"), "-"),
        "strided": Level("strided", "Strided", _strided, "--"),
        "avgpool": Level("avgpool", "AvgPool", _pooling("AveragePooling2D"), ":"),
    },
    "optimizer": {
        "adam": Level("adam", "Adam", _adamw, "#1f77b4", "AdamW"),
        "sgd": Level("sgd", "SGD", _sgd, "#d62728", "SGD with Nesterov momentum"),
    },
}
# The default grid: two levels of each choice (8 variants); the others are opt-in.
FACTORS = {"activation": ("relu", "leakyrelu"), "downsampling": ("maxpool", "strided"),
           "optimizer": ("adam", "sgd")}
DISPLAY = {name: level.display for levels in LEVELS.values() for name, level in levels.items()}


def level(factor, name):
    """The registered level, or ValueError naming the known ones."""
    try:
        return LEVELS[factor][name]
    except KeyError:
        raise ValueError(f"unknown {factor} level {name!r} (known: "
                         f"{', '.join(LEVELS.get(factor, {}))})") from None


def display_name(name):
    return DISPLAY[name]


def variant_name(names):
    """The run folders' name of a variant from its level names: CNN_ReLU_MaxPool_Adam."""
    return "CNN_" + "_".join(DISPLAY[name] for name in names)


def level_order(factor, name):
    """The level's place in its factor's registry (the reference is 0)."""
    return list(LEVELS[factor]).index(name)


def ordered(factor, names):
    """The given levels of a factor in the registry's order (reference first)."""
    return tuple(sorted(set(names), key=lambda n: level_order(factor, n)))
