"""Beyond accuracy: calibration, shift robustness, Grad-CAM and the HParams view, checked
against hand-computed and exactly known cases, and end to end on a tiny real run."""

import json

import keras
import matplotlib.image
import numpy as np
import pytest
from conftest import TINY_NAMES, copy_of

import fashion_mnist_cnn as fm
from fmlab.measures import model_analysis as ma
from fmlab.store import run_store
from fmlab.run import training
from fmlab.run.models import build_model
from fmlab.run.variants import Variant

pytestmark = pytest.mark.trains  # trains models: left out of `make test-fast`


def one_hot_like(confidence, predicted, classes=10):
    """Probabilities with the given max confidence on `predicted`, the rest spread evenly."""
    probabilities = np.full((len(predicted), classes), 0.0)
    probabilities[:] = ((1 - np.asarray(confidence)) / (classes - 1))[:, None]
    probabilities[np.arange(len(predicted)), predicted] = confidence
    return probabilities


def test_ece_of_a_perfectly_calibrated_and_an_overconfident_model():
    labels = np.zeros(100, dtype=int)
    predicted = np.where(np.arange(100) < 80, 0, 1)  # 80% right ...
    calibrated = one_hot_like(np.full(100, 0.8), predicted)  # ... at 80% confidence
    assert ma.expected_calibration_error(ma.reliability_bins(calibrated, labels)) == pytest.approx(0)
    overconfident = one_hot_like(np.full(100, 0.99), predicted)  # 80% right at 99%
    assert ma.expected_calibration_error(ma.reliability_bins(overconfident, labels)) == pytest.approx(0.19)


def test_ece_weights_the_bins_by_their_counts():
    # bin (0.6, 0.667]: 4 predictions at 0.65, 2 right -> |0.5 - 0.65| = 0.15, weight 0.4
    # bin (0.933, 1]:   6 predictions at 0.95, 6 right -> |1 - 0.95| = 0.05, weight 0.6
    confidence = np.array([0.65] * 4 + [0.95] * 6)
    predicted = np.array([0, 0, 1, 1] + [0] * 6)
    bins = ma.reliability_bins(one_hot_like(confidence, predicted), np.zeros(10, dtype=int))
    assert sum(bins["count"]) == 10 and bins["count"][9] == 4 and bins["count"][14] == 6
    assert ma.expected_calibration_error(bins) == pytest.approx(0.4 * 0.15 + 0.6 * 0.05)
    assert ma.negative_log_likelihood(one_hot_like(confidence, predicted), np.zeros(10, dtype=int)) \
        == pytest.approx(-(2 * np.log(0.65) + 2 * np.log(0.35 / 9) + 6 * np.log(0.95)) / 10)


def test_shifts_move_content_and_fill_with_zeros():
    images = np.arange(2 * 28 * 28, dtype=np.float32).reshape(2, 28, 28, 1) + 1
    np.testing.assert_array_equal(ma.shift_images(images, 0, 0), images)
    right_down = ma.shift_images(images, 2, 1)
    np.testing.assert_array_equal(right_down[:, 2:, 1:], images[:, :-2, :-1])
    assert not right_down[:, :2].any() and not right_down[:, :, :1].any()
    per_image = ma.shift_images(images, np.array([2, 0]), np.array([1, -3]))
    np.testing.assert_array_equal(per_image[0], right_down[0])
    np.testing.assert_array_equal(per_image[1], ma.shift_images(images[1:], 0, -3)[0])


def invariant_model():
    """1x1 convolution, global average pooling, softmax: with content inside the frame and a
    zero background, any shift that keeps the content inside gives exactly the same output."""
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(16, 1, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x))


def test_an_exactly_shift_invariant_model_is_consistent_and_unaffected():
    rng = np.random.default_rng(0)
    images = np.zeros((300, 28, 28, 1), np.float32)
    images[:, 4:24, 4:24] = rng.random((300, 20, 20, 1))  # a 4-pixel empty border
    model = invariant_model()
    predict = lambda x: model.predict(x, batch_size=300, verbose=0)  # noqa: E731
    labels = predict(images).argmax(axis=1)
    result = ma.shift_robustness(predict, images, labels)
    assert result["consistency"] == 1.0
    assert result["accuracy"] == {"0": 1.0, "1": 1.0, "2": 1.0, "3": 1.0}


def test_a_shift_of_zero_is_the_plain_accuracy():
    rng = np.random.default_rng(1)
    images = rng.random((200, 28, 28, 1)).astype(np.float32)
    labels = rng.integers(0, 10, 200)
    training.start_run(0, "float32")
    model = build_model(Variant("relu", "strided", "adam"))
    predict = training.plain_predictor(model)
    plain = float((predict(images).argmax(axis=1) == labels).mean())
    assert ma.shift_robustness(predict, images, labels, shifts=())["accuracy"] == {"0": plain}


def test_gradcam_maps_are_at_the_layer_resolution():
    rng = np.random.default_rng(2)
    images = rng.random((3, 28, 28, 1)).astype(np.float32)
    training.start_run(0, "float32")
    model = build_model(Variant("leakyrelu", "maxpool", "sgd"))
    maps = ma.gradcam(model, images, "act4", [0, 3, 9])
    assert maps.shape == (3, 14, 14) and maps.min() >= 0 and maps.max() <= 1


def test_gradcam_of_a_known_model_is_the_class_evidence():
    """act4 = the image itself (channel 0) and its negative (channel 1), global average
    pooling, then class 0's logit reads channel 0 and class 1's channel 1. Grad-CAM's
    channel weights are the logit's kernel / (H * W), so class 0's map is the image scaled to
    a peak of 1, and class 1's is ReLU of minus the image: all zero, returned as zeros."""
    inputs = keras.Input((28, 28, 1))
    act4 = keras.layers.Conv2D(2, 1, use_bias=False, name="act4")(inputs)
    pooled = keras.layers.GlobalAveragePooling2D()(act4)
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax", name="softmax")(pooled))
    model.get_layer("act4").set_weights([np.array([1.0, -1.0], np.float32).reshape(1, 1, 1, 2)])
    kernel = np.zeros((2, 10), np.float32)
    kernel[0, 0] = kernel[1, 1] = 1.0
    model.get_layer("softmax").set_weights([kernel, np.zeros(10, np.float32)])
    image = np.random.default_rng(3).random((1, 28, 28, 1)).astype(np.float32)
    maps = ma.gradcam(model, np.concatenate([image, image]), "act4", [0, 1])
    np.testing.assert_allclose(maps[0], image[0, :, :, 0] / image.max(), rtol=1e-5)
    assert np.all(maps[1] == 0) and np.all(np.isfinite(maps))


# ----------------------------------------------------------------------------- end to end

def test_every_run_stores_its_analysis(tiny_grid):
    analysed_run = tiny_grid[0]
    for name in TINY_NAMES:
        run_dir = run_store.run_dir(analysed_run, name, 0)
        record = json.loads((run_dir / run_store.METRICS).read_text())
        analysis = record["analysis"]
        assert analysis["version"] == ma.ANALYSIS_VERSION and analysis["shift_images"] == 512
        saved = run_store.load_predictions(run_dir)  # the stored ECE is that of the predictions
        assert record["ece"] == pytest.approx(ma.expected_calibration_error(
            ma.reliability_bins(saved["probabilities"], saved["labels"])), abs=1e-12)
        assert record["nll"] == pytest.approx(record["test_loss"], rel=1e-3)
        assert sum(analysis["reliability"]["count"]) == 1024
        assert set(analysis["shift_accuracy"]) == {"0", "1", "2", "3"}
        assert 0 < record["shift_consistency"] <= 1
        assert record["shift_accuracy_1px"] == analysis["shift_accuracy"]["1"]
    rows = json.loads((analysed_run / "results.json").read_text())
    assert all(r["ece"] is not None and r["shift_consistency"] is not None for r in rows)


def test_analysis_figures_are_drawn_and_embedded(tiny_grid):
    analysed_run = tiny_grid[0]
    best = json.loads((analysed_run / "results.json").read_text())[0]["name"]
    for name in ("calibration.png", "shift_robustness.png", f"{best}_gradcam.png"):
        pixels = matplotlib.image.imread(analysed_run / name)
        assert pixels.shape[0] > 400 and pixels[..., :3].std() > 0.05, name
    page = (analysed_run / "report.html").read_text()
    summary = (analysed_run / "summary.md").read_text()
    for text in ("Calibration", "Shift robustness", "Factor effects on ECE", "calibration.png",
                 "shift_robustness.png", "_gradcam.png"):
        assert text in summary, text
    assert "<h3>Calibration</h3>" in page and "alt='calibration'" in page and "alt='shift_robustness'" in page


def test_report_only_computes_a_missing_analysis_once_and_caches_it(tiny_grid, tmp_path,
                                                                    monkeypatch):
    analysed_run = copy_of(tiny_grid[0], tmp_path / "grid")
    path = run_store.run_dir(analysed_run, TINY_NAMES[1], 0) / run_store.METRICS
    record = json.loads(path.read_text())
    expected = record["ece"], record["shift_consistency"]
    path.write_text(json.dumps({k: v for k, v in record.items()
                                if k not in ("analysis", "ece", "nll", "shift_consistency")}))
    monkeypatch.setattr(keras.Model, "fit", lambda *a, **k: pytest.fail("--report-only trained"))
    assert fm.main(["--report-only", "--output-dir", str(analysed_run)]) == 0
    again = json.loads(path.read_text())
    assert (again["ece"], again["shift_consistency"]) == pytest.approx(expected)
    calls = []
    monkeypatch.setattr(ma, "analyse", lambda *a, **k: calls.append(1))
    assert fm.main(["--report-only", "--output-dir", str(analysed_run)]) == 0
    assert calls == []  # cached: nothing recomputed


def test_hparams_read_back_with_tensorboards_reader(tiny_grid):
    analysed_run = tiny_grid[0]
    import tensorflow as tf
    from tensorboard.backend.event_processing import event_accumulator
    from tensorboard.plugins.hparams import metadata

    root = event_accumulator.EventAccumulator(str(analysed_run / "runs"))
    root.Reload()
    experiment = metadata.parse_experiment_plugin_data(
        root.PluginTagToContent("hparams")[metadata.EXPERIMENT_TAG])
    assert {h.name for h in experiment.hparam_infos} >= {"activation", "downsampling", "optimizer", "seed"}
    assert {m.name.tag for m in experiment.metric_infos} >= {"test_accuracy", "ece", "shift_consistency"}

    run_dir = run_store.run_dir(analysed_run, "CNN_ReLU_MaxPool_Adam", 0)
    session = event_accumulator.EventAccumulator(str(run_dir / "tensorboard"),
                                                 size_guidance={event_accumulator.TENSORS: 0})
    session.Reload()
    start = metadata.parse_session_start_info_plugin_data(
        session.PluginTagToContent("hparams")[metadata.SESSION_START_INFO_TAG])
    assert start.hparams["downsampling"].string_value == "maxpool"
    assert start.hparams["epochs"].number_value == 2
    record = json.loads((run_dir / "metrics.json").read_text())
    for tag in ("test_accuracy", "ece", "shift_consistency"):
        (event,) = session.Tensors(tag)[-1:]
        assert float(tf.make_ndarray(event.tensor_proto)) == pytest.approx(record[tag], rel=1e-6)


def test_the_frontier_figure_draws_every_finished_run(tmp_path):
    """benchmarks/frontier.py's figure: validation and training accuracy against the budget,
    seeds as points, the chosen budget marked; a budget with one seed so far still draws."""
    from conftest import assert_real_png
    from fmlab.figures.plots import plot_frontier

    adam = {"activation": "relu", "downsampling": "maxpool", "optimizer": "adam"}
    sgd = {**adam, "optimizer": "sgd"}
    points = [(e, 0.93 + 0.001 * e + 0.0005 * s, 0.94 + 0.002 * e) for e in (8, 16, 24)
              for s in (0, 1)] + [(32, 0.96, np.nan)]  # an older run without train accuracy
    path = plot_frontier([(adam, "Adam", points), (sgd, "SGD", points[:3])],
                         tmp_path / "frontier.png", chosen=16)
    pixels = assert_real_png(path)
    assert pixels.shape[1] > 2 * pixels.shape[0]  # two panels side by side
