"""What differs between the runs: the Variant (its level of every factor) and its size.

    variant = Variant("relu", "strided", "adam")     # variant.name: CNN_ReLU_Strided_Adam
    count_params(variant)                            # 678,378, without building the model

No Keras here: --list-variants and the report name and count variants without TensorFlow
(fmlab.run.models builds them; a test holds count_params to Keras' count for every level).
"""

import dataclasses
import itertools

from fmlab.core.levels import DESIGN, LEVELS, MODEL_PARTS, level, variant_name

MAX_TRAINABLE_PARAMS = 1_000_000
LEARNED_DOWNSAMPLING = {"strided"}  # downsampling levels with weights (a conv block each)


@dataclasses.dataclass(frozen=True, order=True)
class Variant:
    activation: str    # a level of levels.LEVELS["activation"]: relu | leakyrelu | gelu
    downsampling: str  # maxpool | strided | avgpool
    optimizer: str     # adam | sgd
    # ((factor, level), ...) of every other factor in the grid: a model part (MODEL_PARTS) or
    # a Recipe setting (register_setting_factor); a level away from its default names a suffix
    extra: tuple = ()

    def __post_init__(self):
        for factor in DESIGN:
            level(factor, getattr(self, factor))  # an unknown level is refused, never built as another
        for factor, name in self.extra:
            level(factor, name)

    @property
    def name(self):
        return variant_name(self.design_levels, self.extra)

    @property
    def design_levels(self):
        return tuple(getattr(self, factor) for factor in DESIGN)

    @property
    def levels(self):
        """{factor: level} of every factor, the design's three and the extra ones."""
        return {**dict(zip(DESIGN, self.design_levels)), **dict(self.extra)}

    def settings(self):
        """{Recipe field: value} its setting factors ask for (applied over the grid's recipe)."""
        return {factor: LEVELS[factor][name].build for factor, name in self.extra
                if factor not in MODEL_PARTS}

    def parts(self):
        """{model part: what build_model builds it with}, for its model-part factors."""
        return {factor: LEVELS[factor][name].build for factor, name in self.extra
                if factor in MODEL_PARTS}


def variant_grid(activations, downsamplings, optimizers, extra=None):
    """Every combination of the levels; extra: {factor: [level names]} of the other factors."""
    extra = extra or {}
    combos = itertools.product(activations, downsamplings, optimizers,
                               *extra.values())
    return [Variant(a, d, o, tuple(zip(extra, rest))) for a, d, o, *rest in combos]


def count_params(variant, bn_scale=True):
    """The trainable parameters of the variant's model, counted from the architecture that
    fmlab.run.models builds (3x3 convolutions, batch norm's beta and gamma, dense 512, softmax)."""
    parts = {"batchnorm": True, "width": 1, **variant.parts()}
    bn = (2 if bn_scale else 1) if parts["batchnorm"] else 0

    def conv(c_in, c_out):  # without batch norm a convolution keeps its bias
        return 9 * c_in * c_out + (bn * c_out if parts["batchnorm"] else c_out)
    learned = variant.downsampling in LEARNED_DOWNSAMPLING
    total, channels = 0, 1
    for filters in (round(32 * parts["width"]), round(64 * parts["width"])):
        total += conv(channels, filters) + conv(filters, filters)
        total += conv(filters, filters) if learned else 0
        channels = filters
    total += conv(channels, channels) if learned else 0  # down3: 7x7 -> 4x4
    return total + (16 * channels * 512 + 512) + (512 * 10 + 10)
