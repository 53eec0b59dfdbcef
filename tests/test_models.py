"""Every variant's model: structure, parameter budget, optimizer and schedule."""

import itertools

import keras
import numpy as np
import pytest

from fmlab.run import models
from fmlab.run import training
from fmlab.run.models import build_model, trainable_params
from fmlab.core.levels import FACTORS
from fmlab.run.variants import Variant, variant_grid
from fmlab.run.recipe import Recipe

VARIANTS = variant_grid(*FACTORS.values())


def test_grid_has_eight_distinct_named_variants():
    names = [v.name for v in VARIANTS]
    assert len(set(names)) == 8
    assert "CNN_ReLU_MaxPool_Adam" in names and "CNN_LeakyReLU_Strided_SGD" in names


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.name)
def test_variant_structure(variant):
    model = build_model(variant)
    assert trainable_params(model) < models.MAX_TRAINABLE_PARAMS
    assert model.output_shape == (None, 10)
    convs = [model.get_layer(f"conv{i}") for i in range(1, 5)]
    assert [c.filters for c in convs] == [32, 32, 64, 64]
    assert all(c.kernel_size == (3, 3) and c.padding == "same" and c.strides == (1, 1) for c in convs)
    for i in range(1, 5):  # batch norm then the variant's activation after every conv
        assert isinstance(model.get_layer(f"bn{i}"), keras.layers.BatchNormalization)
        act = model.get_layer(f"act{i}")
        assert isinstance(act, keras.layers.LeakyReLU if variant.activation == "leakyrelu"
                          else keras.layers.ReLU)
    for block in (1, 2):
        assert model.get_layer(f"dropout{block}").rate == 0.25
        down = model.get_layer(f"down{block}")
        if variant.downsampling == "maxpool":
            assert isinstance(down, keras.layers.MaxPooling2D) and down.pool_size == (2, 2)
        else:
            assert isinstance(down, keras.layers.Conv2D) and down.strides == (2, 2)
            assert down.kernel_size == (3, 3)
    assert model.get_layer("dense").units == 512
    assert model.get_layer("dense_dropout").rate == 0.5
    assert model.get_layer("softmax").units == 10
    assert model.get_layer("flatten").output.shape[-1] == 4 * 4 * 64
    probabilities = model.predict(np.zeros((2, 28, 28, 1), np.float32), verbose=0)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, rtol=1e-5)


def test_strided_convolutions_add_parameters():
    relu = {v.downsampling: trainable_params(build_model(v))
            for v in VARIANTS if v.activation == "relu" and v.optimizer == "adam"}
    assert relu["strided"] > relu["maxpool"]


def test_parameter_budget_is_enforced(monkeypatch):
    monkeypatch.setattr(models, "MAX_TRAINABLE_PARAMS", 500_000)
    with pytest.raises(ValueError, match="over the budget of 500,000"):
        build_model(VARIANTS[0])


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_schedule_warms_up_then_decays_to_zero(optimizer):
    variant = Variant("relu", "maxpool", optimizer)
    recipe = Recipe(epochs=5)
    opt = training.make_optimizer(variant, steps_per_epoch=100, recipe=recipe)
    lr = opt.learning_rate if callable(opt.learning_rate) else opt._learning_rate
    rates = [float(lr(step)) for step in (0, 50, 100, 300, 500)]
    peak = recipe.peak_lr(optimizer)
    assert rates[0] == 0 and rates[1] == pytest.approx(peak / 2)
    assert rates[2] == pytest.approx(peak) and rates[2] > rates[3] > rates[4]
    assert rates[4] == pytest.approx(0, abs=1e-9)
    if optimizer == "adam":
        assert isinstance(opt, keras.optimizers.AdamW)
    else:
        assert isinstance(opt, keras.optimizers.SGD) and opt.momentum == 0.9 and opt.nesterov


# ----------------------------------------------------------------------------- the level registry

def test_every_registered_level_builds_what_it_names():
    import keras

    from fmlab.core.levels import LEAKY_SLOPE, LEVELS
    from fmlab.measures.model_analysis import unit_layers

    for activation in LEVELS["activation"]:
        model = build_model(Variant(activation, "maxpool", "adam"))
        layer = model.get_layer("act1")
        expected = {"relu": keras.layers.ReLU, "leakyrelu": keras.layers.LeakyReLU,
                    "gelu": keras.layers.Activation}[activation]
        assert type(layer) is expected, activation
        probe = keras.ops.convert_to_numpy(layer(keras.ops.convert_to_tensor([[-1.0, 1.0]])))
        expected_out = {"relu": [0.0, 1.0], "leakyrelu": [-LEAKY_SLOPE, 1.0],
                        "gelu": [-0.158655, 0.841345]}[activation]
        np.testing.assert_allclose(probe[0], expected_out, atol=1e-2)  # bfloat16 if a test left it
    for downsampling, kind in (("maxpool", keras.layers.MaxPooling2D),
                               ("avgpool", keras.layers.AveragePooling2D),
                               ("strided", keras.layers.Conv2D)):
        model = build_model(Variant("relu", downsampling, "adam"))
        assert type(model.get_layer("down1")) is kind and model.get_layer("down3").output.shape[1:3] == (4, 4)
        has_acts = {"down1_act", "down2_act", "down3_act"} <= set(unit_layers(model))
        assert has_acts == (downsampling == "strided")  # dead units counted where they can be
    for optimizer, kind in (("adam", keras.optimizers.AdamW), ("sgd", keras.optimizers.SGD)):
        assert type(training.make_optimizer(Variant("relu", "maxpool", optimizer), 10, Recipe())) is kind


def test_an_unknown_level_is_refused_not_built_as_another():
    with pytest.raises(ValueError, match="unknown activation level 'tanh'"):
        Variant("tanh", "maxpool", "adam")
    with pytest.raises(ValueError, match="known: maxpool, strided, avgpool"):
        Variant("relu", "median", "adam")


def test_new_levels_are_named_and_styled_but_off_by_default():
    from fmlab.core.levels import DISPLAY, FACTORS, LEVELS

    assert Variant("gelu", "avgpool", "sgd").name == "CNN_GELU_AvgPool_SGD"
    assert "gelu" not in FACTORS["activation"] and "avgpool" not in FACTORS["downsampling"]
    for factor in FACTORS:  # the design's choices each have a style channel (model parts: none)
        levels = LEVELS[factor]
        styles = [level.style for level in levels.values()]
        assert len(set(styles)) == len(styles), f"{factor}: two levels drawn alike"
        assert all(name in DISPLAY for name in levels)


def test_parameter_counts_without_keras_match_the_built_models():
    """--list-variants counts parameters from the architecture (no TensorFlow); the count is
    Keras' own for every registered level and model part."""
    from fmlab.core.levels import LEVELS, MODEL_PARTS
    from fmlab.run.variants import count_params

    parts = [()] + [((p, level),) for p, levels in MODEL_PARTS.items() for level in levels]
    for downsampling, optimizer, extra in itertools.product(LEVELS["downsampling"], ["adam"], parts):
        variant = Variant("relu", downsampling, optimizer, extra)
        assert count_params(variant) == trainable_params(build_model(variant)), variant.name
    strided = Variant("leakyrelu", "strided", "sgd")
    assert count_params(strided, bn_scale=False) == trainable_params(build_model(strided, bn_scale=False))
