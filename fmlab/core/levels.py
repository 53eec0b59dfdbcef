"""Every level of every design choice, defined in one place.

A level has its name (the CLI's and the run folders'), its display name, how it builds (an
activation layer, a downsampling block, an optimizer) and how figures draw it (activations
by marker, downsamplings by line style, optimizers by colour). Everything else asks this
registry; an unknown level is refused, never replaced by another.

    LEVELS["activation"]["gelu"].build("act1")        # a keras.layers.Activation("gelu")
    python fashion_mnist_cnn.py --activation relu gelu --downsampling maxpool avgpool

To add a level: one entry here; for an optimizer also its peak, a Recipe field
`<level>_peak_lr` (which --peak-lr-factor scales), and that field's value for the runs
recorded before it in run_store.settings_of (a test holds every field to having one).
Beyond the three design choices, any Recipe setting becomes a factor on the command line
(`--factor epochs=8,32`: register_setting_factor), and a model part is one MODEL_PARTS entry
(`--factor batchnorm=bn,nobn`); a variant's name gains a suffix for each such level away
from its default, so folders written before a factor existed are its default level.
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
DESIGN = tuple(FACTORS)  # the three choices every variant names; any other factor is extra

# Model parts as factors: a level's `build` is the value build_model receives for the part
# (its keyword of the same name as the factor); the first level is the default, the model as
# the lab builds it. To ask about another part: one entry here and the keyword in build_model.
MODEL_PARTS = {
    "batchnorm": {
        "bn": Level("bn", "BN", True, None, "batch norm after every convolution"),
        "nobn": Level("nobn", "NoBN", False, None, "no batch norm"),
    },
    "dropout": {
        "drop": Level("drop", "Dropout", (0.25, 0.5), None, "dropout 0.25 (conv) and 0.5 (dense)"),
        "nodrop": Level("nodrop", "NoDropout", (0.0, 0.0), None, "no dropout"),
    },
    "width": {
        "width1": Level("width1", "Width1", 1, None, "32 and 64 filters"),
        "width0.5": Level("width0.5", "Width0.5", 0.5, None, "16 and 32 filters"),
    },
}
LEVELS.update(MODEL_PARTS)
DEFAULT_LEVEL = {factor: next(iter(levels)) for factor, levels in MODEL_PARTS.items()}


def setting_level(field, value):
    """The level of a Recipe-setting factor (`--factor epochs=8,32`): named `epochs=8`,
    displayed `epochs8` (the suffix of the variants' names; label_smoothing=0.1:
    `label-smoothing0.1`)."""
    text = format_value(value)  # no underscore in the display: names split on them
    described = SETTING_WORDS.get(field, f"{field.replace('_', ' ')} {{}}").format(text)
    return Level(f"{field}={text}", f"{field.replace('_', '-')}{text}", value, None, described)


# how a title reads a setting's level where "field value" reads awkwardly ("at 8 epochs")
SETTING_WORDS = {"epochs": "{} epochs", "batch_size": "batch size {}"}


def format_value(value):
    return f"{value:g}" if isinstance(value, float) else str(value).lower()


def register_setting_factor(field, values, default):
    """Make a Recipe setting a factor with the given values (default: the Recipe's value,
    which names no suffix): its levels enter LEVELS and DISPLAY like any other. Returns the
    level names in the order given."""
    levels = {}
    for value in values:
        level_ = setting_level(field, value)
        levels[level_.name] = level_
    LEVELS[field] = levels
    DEFAULT_LEVEL[field] = setting_level(field, default).name
    DISPLAY.update({name: level_.display for name, level_ in levels.items()})
    check_unique_level_names()
    return list(levels)


def check_unique_level_names():
    """Every level name names one level of one factor: records and folders key on them."""
    seen = {}
    for factor, levels in LEVELS.items():
        for name in levels:
            if name in seen and seen[name] != factor:
                raise ValueError(f"level {name!r} is registered for both {seen[name]} and {factor}")
            seen[name] = factor


check_unique_level_names()
DISPLAY = {name: level.display for levels in LEVELS.values() for name, level in levels.items()}


def suffix(extra):
    """The part of a variant's name that its extra factors add: each level that is not its
    factor's default, e.g. ('epochs', 'epochs=8') -> '_epochs8', in suffix_order."""
    return "".join(f"_{DISPLAY[name]}" for factor, name in sorted(extra, key=suffix_order)
                   if name != DEFAULT_LEVEL[factor])


def name_suffix(name):
    """'NoBN_epochs8' of CNN_ReLU_MaxPool_Adam_NoBN_epochs8: what a variant's name carries
    after the design's three levels ('' for the seed's own variants)."""
    return "_".join(name.removeprefix("CNN_").split("_")[len(DESIGN):])


def suffix_order(factor_level):
    """The suffixes' one order, whatever order the factors were given in: model parts as
    MODEL_PARTS lists them, then setting factors by name."""
    factor = factor_level[0]
    return (0, list(MODEL_PARTS).index(factor), "") if factor in MODEL_PARTS else (1, 0, factor)


def level(factor, name):
    """The registered level, or ValueError naming the known ones."""
    try:
        return LEVELS[factor][name]
    except KeyError:
        raise ValueError(f"unknown {factor} level {name!r} (known: "
                         f"{', '.join(LEVELS.get(factor, {}))})") from None


def display_name(name):
    return DISPLAY[name]


def variant_name(names, extra=()):
    """The run folders' name of a variant from its level names: CNN_ReLU_MaxPool_Adam, with a
    suffix for each extra factor away from its default (CNN_ReLU_MaxPool_Adam_epochs8)."""
    return "CNN_" + "_".join(DISPLAY[name] for name in names) + suffix(extra)


def level_order(factor, name):
    """The level's place in its factor's registry (the reference is 0)."""
    return list(LEVELS[factor]).index(name)


def ordered(factor, names):
    """The given levels of a factor in the registry's order (reference first)."""
    return tuple(sorted(set(names), key=lambda n: level_order(factor, n)))
