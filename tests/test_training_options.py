"""The training techniques of the ablation (benchmarks/ablation.py): small translations,
label smoothing, weight averaging (EMA) and AdamW's weight decay do what they say; the
recipe's settings reach the optimizer and are told apart from older runs'. (A killed run
with these techniques resuming and saving the model it validated: test_reliability.py.)"""

import dataclasses
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import fashion_mnist_cnn as fm
from fmlab.store import run_store
from fmlab.run import training
from fmlab.run.pipeline import make_dataset
from fmlab.core.errors import UsageError
from fmlab.measures.model_analysis import shift_images
from fmlab.run.models import build_model, trainable_params
from fmlab.run.variants import Variant
from fmlab.run.recipe import Recipe, flag_of, setting_names
from fmlab.run.training_callbacks import Lookahead

pytestmark = pytest.mark.trains  # trains models: left out of `make test-fast`

FLAGS = setting_names()  # how the runner names settings in refusals


def shifted(image, dy, dx):
    """image moved down dy and right dx whole pixels, zeros where it came from outside."""
    out = np.zeros_like(image)
    h, w = image.shape[:2]
    out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        image[max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


def test_translations_move_whole_pixels_and_fill_with_zeros():
    rng = np.random.default_rng(0)
    images = rng.random((64, 28, 28, 1)).astype(np.float32) + 0.1  # no zeros of their own
    ds = make_dataset(images, np.arange(64), batch_size=64, training=True, seed=0, translate=2)
    augmented, index = next(iter(ds))
    moves = []
    for image, i in zip(np.asarray(augmented), np.asarray(index)):
        matches = [(dy, dx) for flip in (False, True) for dy in range(-2, 3) for dx in range(-2, 3)
                   if np.array_equal(image, shifted(images[i][:, ::-1] if flip else images[i], dy, dx))]
        assert matches, f"image {i} is not a flip plus a shift of at most 2 pixels"
        moves.append(matches[0])
    assert len(set(moves)) > 5  # drawn per image, not one shift for the batch


def test_translations_replay_with_the_seed():
    """A pipeline rebuilt with the same seed shifts the same images the same way; another seed
    shifts them otherwise."""
    images = np.random.default_rng(0).random((64, 28, 28, 1)).astype(np.float32) + 0.1

    def batches(seed):
        ds = make_dataset(images, np.arange(64), 32, training=True, seed=seed, translate=2)
        return [np.asarray(x) for x, _ in ds]

    first = batches(0)
    assert all(np.array_equal(a, b) for a, b in zip(first, batches(0)))
    assert not all(np.array_equal(a, b) for a, b in zip(first, batches(1)))

def test_label_smoothing_trains_on_one_hot_targets():
    labels = np.array([3, 0, 9], dtype=np.int32)
    ds = make_dataset(np.zeros((3, 28, 28, 1), np.float32), labels, 3, training=False, seed=0,
                         one_hot=True)
    targets = np.asarray(next(iter(ds))[1])
    np.testing.assert_array_equal(targets.argmax(axis=1), labels)
    training.start_run(0, "float32")
    model = training.compiled_model(Variant("relu", "maxpool", "adam"), tf.distribute.get_strategy(),
                                    10, Recipe(epochs=2, label_smoothing=0.1, ema=0.99,
                                               adamw_weight_decay=0.05))
    assert model.loss.label_smoothing == pytest.approx(0.1)
    # a confident, correct prediction still costs something: the target is not one-hot
    confident = np.eye(10, dtype=np.float32)[labels] * 0.999 + 0.0001
    assert float(model.loss(targets, confident)) > 0.2
    assert model.optimizer.use_ema and model.optimizer.ema_momentum == pytest.approx(0.99)
    assert model.optimizer.weight_decay == pytest.approx(0.05)


def test_runs_from_before_the_recorded_peaks_are_told_apart():
    """The default peaks changed (AdamW 2e-3, 4e-3, now 6e-3; SGD 0.05, now 0.075): a run made
    before the peaks were recorded reads as 2e-3 / 0.05 x its lr_scale, and a run at an
    earlier default is refused beside one with today's."""
    old = {"settings": {"epochs": 12, "lr_scale": 2.0}}
    assert run_store.settings_of(old)["adam_peak_lr"] == pytest.approx(4e-3)
    assert run_store.settings_of(old)["sgd_peak_lr"] == pytest.approx(0.1)
    now = dataclasses.asdict(Recipe.from_args(fm.parse_args([])))
    assert now["adam_peak_lr"] == Recipe().adam_peak_lr == 6e-3 and now["sgd_peak_lr"] == 0.075
    recorded = {k: v for k, v in now.items() if k not in ("adam_peak_lr", "sgd_peak_lr")}
    with pytest.raises(UsageError, match=r"--adam-peak-lr 0.002 \(now 0.006\)"):
        run_store.check_same_settings(recorded, now, "old run", FLAGS)
    twelve_epochs = {**now, "epochs": 12, "adam_peak_lr": 4e-3, "sgd_peak_lr": 0.05}
    with pytest.raises(UsageError, match=rf"--epochs 12 \(now {Recipe().epochs}\)"):
        run_store.check_same_settings(twelve_epochs, now, "12-epoch run", FLAGS)


def test_settings_that_became_recipe_fields_read_as_the_values_older_runs_had():
    """Warm-up, SGD's momentum and decay and the test subset were fixed before they were
    settings: a run recorded without them reads as trained with them, and another value now
    is refused by name."""
    old = {k: v for k, v in dataclasses.asdict(Recipe()).items()
           if k not in ("warmup_epochs", "sgd_momentum", "sgd_weight_decay", "test_images")}
    assert run_store.settings_of({"settings": old}) == dataclasses.asdict(Recipe())
    run_store.check_same_settings(old, dataclasses.asdict(Recipe()), "old run", FLAGS)  # the same
    with pytest.raises(UsageError, match=r"--sgd-momentum 0.9 \(now 0.95\)"):
        run_store.check_same_settings(old, dataclasses.asdict(Recipe(sgd_momentum=0.95)), "old", FLAGS)


def test_refusals_name_the_flags_that_exist():
    """A changed setting is named by the flag that sets it (taken from the Recipe, as the
    runner's parser is): a value flag with its values, a switch or derived setting by its
    settings.json key and its flag; a retired setting at its neutral value is no difference."""
    fields = {f.name: f for f in dataclasses.fields(Recipe)}
    assert flag_of(fields["bn_scale"]) == "--no-bn-scale"
    assert flag_of(fields["replica_scaling"]) == "--scale-with-replicas"
    assert flag_of(fields["peak_lr_factor"]) == "--peak-lr-factor"
    now = dataclasses.asdict(Recipe())
    for changed, message in [({"bn_scale": False}, "bn_scale (--no-bn-scale) False (now True)"),
                             ({"tta": False}, "tta (--no-tta) False (now True)"),
                             ({"replica_scaling": 2},
                              "replica_scaling (--scale-with-replicas) 2 (now 1)"),
                             ({"peak_lr_factor": 2.0}, "--peak-lr-factor 2.0 (now 1.0)"),
                             ({"tta_translate": 1}, "tta_translate 1 (now None)")]:
        with pytest.raises(UsageError) as refused:
            run_store.check_same_settings({**now, **changed}, now, "run", FLAGS)
        assert f"run: made with {message};" in str(refused.value)
    run_store.check_same_settings({**now, "tta_translate": 0}, now, "run", FLAGS)  # retired, off


def test_random_erasing_keeps_shapes_erases_only_with_its_probability_and_replays():
    """--random-erasing P: images keep shape and range; with P = 1 every image has a changed
    rectangle, with P = 0 the pipeline is the flips alone; a pipeline rebuilt with the same
    seed draws the same augmentations, another seed others."""
    images = np.full((64, 28, 28, 1), 0.5, np.float32)  # flips leave a constant image alone

    def batches(p, seed=0):
        ds = make_dataset(images, np.arange(64), 32, training=True, seed=seed, random_erasing=p)
        return [(np.asarray(x), np.asarray(y)) for x, y in ds]

    erased = batches(1.0)
    assert [x.shape for x, _ in erased] == [(32, 28, 28, 1)] * 2
    x = np.concatenate([b for b, _ in erased])
    changed = (x != 0.5).reshape(64, -1)
    assert changed.any(axis=1).all() and 0.0 <= x.min() and x.max() <= 1.0
    assert 0.01 < changed.mean() < 0.5  # a rectangle, not the image
    rows = changed.reshape(64, 28, 28).any(axis=2)  # the erased rows are contiguous
    assert all(np.ptp(np.flatnonzero(r)) + 1 == r.sum() for r in rows)
    assert all((x == 0.5).all() for x, _ in batches(0.0))
    again, other = batches(1.0), batches(1.0, seed=1)
    assert all(np.array_equal(a, b) for (a, _), (b, _) in zip(erased, again))
    assert not all(np.array_equal(a, b) for (a, _), (b, _) in zip(erased, other))


def test_recipe_fields_reach_the_sgd_optimizer_and_the_warm_up():
    recipe = Recipe(epochs=4, sgd_peak_lr=0.05, sgd_momentum=0.8, sgd_weight_decay=1e-3,
                    warmup_epochs=0.5)
    optimizer = training.make_optimizer(Variant("relu", "maxpool", "sgd"), 100, recipe)
    assert optimizer.momentum == pytest.approx(0.8) and optimizer.weight_decay == pytest.approx(1e-3)
    schedule = optimizer.learning_rate if callable(optimizer.learning_rate) else optimizer._learning_rate
    assert float(schedule(25)) == pytest.approx(0.05 / 2)  # half-way through 50 warm-up steps
    assert float(schedule(50)) == pytest.approx(0.05)


# ----------------------------------------------------------------------------- fewer-epochs candidates

def test_dirac_init_makes_conv2_and_conv4_the_identity_and_leaves_conv1_learned():
    training.start_run(0, "float32")
    model = training.compiled_model(Variant("relu", "maxpool", "adam"), tf.distribute.get_strategy(),
                                    10, Recipe(epochs=2, dirac_init=True))
    images = np.random.default_rng(0).random((2, 14, 14, 64), dtype=np.float32)
    conv4 = model.get_layer("conv4")
    np.testing.assert_allclose(np.asarray(conv4(images)), images, atol=1e-6)  # passes through
    assert model.get_layer("conv2").kernel.numpy()[1, 1].trace() == 32
    assert np.count_nonzero(model.get_layer("conv1").kernel.numpy()) == 3 * 3 * 32  # random


def test_no_bn_scale_drops_every_gamma():
    with_scale = training.compiled_model(Variant("relu", "strided", "sgd"), tf.distribute.get_strategy(),
                                         10, Recipe(epochs=2))
    without = training.compiled_model(Variant("relu", "strided", "sgd"), tf.distribute.get_strategy(),
                                      10, Recipe(epochs=2, bn_scale=False))
    norms = [layer for layer in without.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms and all(layer.gamma is None for layer in norms)
    channels = sum(layer.beta.shape[0] for layer in norms)
    assert trainable_params(with_scale) - trainable_params(without) == channels


def test_translation_tta_averages_the_shifted_views():
    training.start_run(0, "float32")
    model = build_model(Variant("relu", "maxpool", "adam"))
    x = np.random.default_rng(1).random((8, 28, 28, 1), dtype=np.float32)
    views = [x, x[:, :, ::-1]]
    views += [shift_images(v, d, d) for v in list(views) for d in (-1, 1)]
    expected = np.mean([model.predict(v, verbose=0) for v in views], axis=0)
    np.testing.assert_allclose(training.predict(model, x, 8, tta=True, translate=1), expected,
                               atol=1e-6)
    assert not np.allclose(expected, training.predict(model, x, 8, tta=True))


def test_lookahead_moves_slow_weights_towards_fast_ones_every_k_steps():
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(1, use_bias=False)(inputs))
    model.layers[1].kernel.assign(np.zeros((3, 1), np.float32))  # slow = 0
    callback = Lookahead(k=2, alpha=0.5)
    callback.set_model(model)
    callback.on_train_begin()
    model.layers[1].kernel.assign(np.full((3, 1), 4.0, np.float32))  # the optimizer's steps
    callback.on_train_batch_end(0)
    assert float(model.layers[1].kernel.numpy()[0, 0]) == 4.0  # step 1 of 2: untouched
    callback.on_train_batch_end(1)
    np.testing.assert_allclose(model.layers[1].kernel.numpy(), 2.0)  # 0 + 0.5 * (4 - 0)
    model.layers[1].kernel.assign(np.full((3, 1), 6.0, np.float32))
    callback.on_train_batch_end(2)
    callback.on_train_batch_end(3)
    np.testing.assert_allclose(model.layers[1].kernel.numpy(), 4.0)  # 2 + 0.5 * (6 - 2)


def test_alternating_flips_mirror_each_image_in_every_other_epoch():
    rng = np.random.default_rng(2)
    images = rng.random((40, 28, 28, 1)).astype(np.float32)
    ds = make_dataset(images, np.arange(40), 16, training=True, seed=0, alternating_flips=True,
                      epochs=3)
    batches = list(ds)
    assert len(batches) == 3 * 3  # ceil(40 / 16) batches per epoch, three epochs
    flipped = {}
    for epoch in range(3):
        for xb, index in batches[3 * epoch: 3 * epoch + 3]:
            for image, i in zip(np.asarray(xb), np.asarray(index)):
                mirrored = np.array_equal(image, images[i][:, ::-1])
                assert mirrored or np.array_equal(image, images[i])
                flipped.setdefault(int(i), []).append(mirrored)
    assert sorted(flipped) == list(range(40))
    assert all(f[0] != f[1] and f[0] == f[2] for f in flipped.values())  # alternate
    assert 5 < sum(f[0] for f in flipped.values()) < 35  # which parity: drawn per image
    resumed = [np.asarray(i) for _, i in make_dataset(images, np.arange(40), 16, training=True,
                                                      seed=0, alternating_flips=True, epochs=3,
                                                      start_epoch=1)]
    assert len(resumed) == 6  # a resumed run's dataset starts at its first unfinished epoch
    assert all(np.array_equal(r, np.asarray(i)) for r, (_, i) in zip(resumed, batches[3:]))


@pytest.mark.parametrize("options", [dict(), dict(translate=2, random_erasing=0.5),
                                     dict(alternating_flips=True, translate=2)])
def test_a_stream_started_at_an_epoch_is_the_unbroken_streams_rest(options):
    """What a run resumed at epoch 2 trains on is what an unbroken run's epochs 2-3 see: the
    same images in the same order with the same flips, shifts and erasing -- not the first
    epochs' again, as a one-pass pipeline rebuilt from the seed would give."""
    images = np.random.default_rng(3).random((40, 28, 28, 1)).astype(np.float32)

    def stream(**more):
        training.start_run(0, "float32")  # a fresh process: the layers' generators rebuilt
        return [np.asarray(x) for x, _ in make_dataset(images, np.arange(40), 16, training=True,
                                                       seed=0, **options, **more)]

    unbroken, resumed = stream(epochs=3), stream(epochs=3, start_epoch=1)
    assert len(unbroken) == 9 and len(resumed) == 6
    assert all(np.array_equal(a, b) for a, b in zip(resumed, unbroken[3:]))
    assert not np.array_equal(unbroken[3], stream()[0])  # epoch 2 is not epoch 1 again


def test_bad_candidate_values_are_refused_in_one_line(capsys):
    for argv in (["--lookahead", "-1"], ["--lookahead-alpha", "0"], ["--random-erasing", "1.5"]):
        with pytest.raises(SystemExit):
            fm.parse_args(argv)
        assert argv[0] in capsys.readouterr().err


def test_a_run_with_every_candidate_saves_the_model_it_validated(tmp_path):
    """All fewer-epochs candidates at once through the runner: recorded with the run, and the
    evaluated checkpoint reproduces its logged validation accuracy."""
    from conftest import inference_accuracy, require_real_data

    from fmlab.run.data import prepare_data

    require_real_data()
    argv = ["--subset", "640", "--batch-size", "64", "--test-images", "512", "--shift-images",
            "100", "--epochs", "2", "--no-report", "--activation", "relu", "--downsampling",
            "maxpool", "--optimizer", "sgd", "--dirac-init", "--no-bn-scale", "--lookahead", "3",
            "--random-erasing", "0.5", "--alternating-flips", "--warmup-epochs", "0.5"]
    assert fm.main([*argv, "--output-dir", str(tmp_path)]) == 0
    run_dir = run_store.run_dir(tmp_path, "CNN_ReLU_MaxPool_SGD", 0)
    record = json.loads((run_dir / run_store.METRICS).read_text())
    assert record["status"] == "ok" and record["epochs_run"] == 2
    assert {k: record["settings"][k] for k in ("dirac_init", "bn_scale", "lookahead",
                                               "random_erasing", "alternating_flips")} == \
        {"dirac_init": True, "bn_scale": False, "lookahead": 3, "random_erasing": 0.5,
         "alternating_flips": True}
    model = keras.models.load_model(run_dir / run_store.MODEL)
    history = run_store.read_history(run_dir / run_store.HISTORY)
    accuracy = inference_accuracy(model, *prepare_data(None, 640, 0.1, seed=0)["val"])
    assert accuracy == pytest.approx(history[record["best_epoch"] - 1]["val_accuracy"], abs=1e-6)
