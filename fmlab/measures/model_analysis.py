"""Beyond accuracy: calibration, shift robustness and Grad-CAM of a trained model.

Calibration (Guo et al. 2017, "On Calibration of Modern Neural Networks"): the expected
calibration error over ECE_BINS (15) equal-width confidence bins, ECE = sum_b |B_b|/N * |acc(B_b) -
conf(B_b)|, and the negative log-likelihood. Shift robustness (Zhang 2019, "Making
Convolutional Networks Shift-Invariant Again"): test accuracy with the images shifted by
1-3 pixels in the eight directions (zero fill), and consistency, how often two random
shifts of one image get the same predicted class. Grad-CAM (Selvaraju et al. 2017): the
class-score gradient-weighted activation map of a conv layer. figure_data: everything the
best run's model-dependent figures draw (kernels, activation maps, mistakes, Grad-CAM).

Computing only: arrays and dicts in, arrays and dicts out; the figures are drawn by
visualization_utils, from what run_store saved. Every run gets the same shifts (a fixed
seed), so differences between variants are paired.
"""

import numpy as np

ECE_BINS = 15
SHIFTS = (1, 2, 3)  # pixels
DIRECTIONS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]
CONSISTENCY_MAX_SHIFT = 3  # Zhang's two random shifts, each in [-3, 3]^2 pixels
ANALYSIS_SEED = 1234
ANALYSIS_VERSION = 2  # bump when a definition changes, so cached analyses are recomputed
SAMPLE_INDEX = 0  # the fixed test image of the activation-map figure (an ankle boot)
MAP_LAYERS = ("act1", "act2", "act3", "act4")
GRADCAM_LAYER = "act4"
# Dying units: the activations after conv1-4 and the dense layer, probed on the first 2,048
# validation images of the run's split (the same images at every epoch)
UNIT_LAYERS = ("act1", "act2", "act3", "act4", "dense_act")
UNIT_PROBE_IMAGES = 2048
GRADCAM_CLASSES = (0, 1, 2, 6, 7, 8)  # one correct example each: T-shirt, Trouser, Pullover, Shirt, Sneaker, Bag
N_MISTAKES = 18


def reliability_bins(probabilities, labels, bins=ECE_BINS):
    """Per equal-width confidence bin: count, number correct and summed confidence."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    # bin b holds confidences in (b/B, (b+1)/B]; a confidence of exactly 0 goes to bin 0
    index = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    return {"count": np.bincount(index, minlength=bins).tolist(),
            "correct": np.bincount(index, weights=correct, minlength=bins).tolist(),
            "confidence": np.bincount(index, weights=confidence, minlength=bins).tolist()}


def expected_calibration_error(bins):
    """ECE from reliability_bins' sums: the count-weighted mean |accuracy - confidence|."""
    count, correct, confidence = (np.asarray(bins[k], dtype=float)
                                  for k in ("count", "correct", "confidence"))
    return float(np.abs(correct - confidence).sum() / count.sum())


def negative_log_likelihood(probabilities, labels, eps=1e-12):
    return float(-np.log(np.clip(probabilities[np.arange(len(labels)), labels], eps, 1)).mean())


def shift_images(images, dy, dx):
    """Shift (N, H, W, C) images by dy rows and dx columns -- one offset for all, or arrays
    of one offset per image -- filling with zeros (the background)."""
    n, h, w = images.shape[:3]
    dy, dx = np.broadcast_to(dy, n), np.broadcast_to(dx, n)
    m = int(max(np.abs(dy).max(initial=0), np.abs(dx).max(initial=0)))
    padded = np.pad(images, ((0, 0), (m, m), (m, m), (0, 0)))
    rows = (m - dy)[:, None] + np.arange(h)  # (N, H): source row of each output row
    cols = (m - dx)[:, None] + np.arange(w)
    return padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


def shift_robustness(predict, images, labels, shifts=SHIFTS, max_shift=CONSISTENCY_MAX_SHIFT,
                     seed=ANALYSIS_SEED):
    """Accuracy at each shift and consistency; predict: images -> class probabilities.

    Accuracy at shift s: every test image moved s pixels in one of the eight directions,
    drawn at random per image (an unbiased estimate of the mean over the directions, over
    all test images at the cost of one pass); "0" is the unshifted accuracy. Consistency:
    each image shifted twice by random offsets in [-max_shift, max_shift]^2, the share of
    images whose two predicted classes agree. The seed is fixed: every run sees the same
    shifts, so differences between variants are paired.
    """
    rng = np.random.default_rng(seed)
    directions = np.array(DIRECTIONS)

    def accuracy_of(dy, dx):
        return float((predict(shift_images(images, dy, dx)).argmax(axis=1) == labels).mean())

    accuracy = {"0": accuracy_of(0, 0)}
    for shift in shifts:
        dy, dx = (shift * directions[rng.integers(len(directions), size=len(images))]).T
        accuracy[str(shift)] = accuracy_of(dy, dx)
    first, second = (predict(shift_images(images, *rng.integers(-max_shift, max_shift + 1,
                                                              size=(2, len(images))))).argmax(axis=1)
                     for _ in range(2))
    return {"accuracy": accuracy, "consistency": float((first == second).mean()),
            "max_shift": max_shift}


def analyse(predict, probabilities, images, labels, shift_images=None):
    """The whole analysis of one run; probabilities: its (TTA) test predictions, used for
    calibration; predict: the plain model, used for the shifted images -- the first
    shift_images of them (all by default: 6 passes over them are most of the cost)."""
    bins = reliability_bins(probabilities, labels)
    shift = shift_robustness(predict, images[:shift_images], labels[:shift_images])
    return {"version": ANALYSIS_VERSION, "shift_images": len(images[:shift_images]),
            "ece": expected_calibration_error(bins),
            "nll": negative_log_likelihood(probabilities, labels),
            "reliability": bins, **{f"shift_{k}": v for k, v in shift.items()}}


def gradcam(model, images, layer_name, class_indices):
    """Grad-CAM heat maps in [0, 1], one (h, w) map per image at layer_name's resolution:
    ReLU(sum_k alpha_k A_k), alpha_k = mean over positions of d score_c / d A_k, where the
    score is the pre-softmax logit of class c (the softmax's input times its kernel)."""
    import keras
    import tensorflow as tf

    softmax = model.get_layer("softmax")
    grad_model = keras.Model(model.inputs[0], [model.get_layer(layer_name).output, softmax.input])
    kernel, bias = (tf.cast(w, tf.float32) for w in softmax.weights)
    with tf.GradientTape() as tape:
        activations, features = grad_model(tf.convert_to_tensor(images), training=False)
        logits = tf.matmul(tf.cast(features, tf.float32), kernel) + bias
        scores = tf.gather(logits, np.asarray(class_indices)[:, None], axis=1, batch_dims=1)
    gradients = tf.cast(tape.gradient(scores, activations), tf.float32)
    activations = tf.cast(activations, tf.float32)
    weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)
    maps = tf.nn.relu(tf.reduce_sum(weights * activations, axis=-1)).numpy()
    peak = maps.max(axis=(1, 2), keepdims=True)
    return np.divide(maps, peak, out=np.zeros_like(maps), where=peak > 0)


def activation_probe(model, layer_names=UNIT_LAYERS):
    """A model sharing `model`'s weights whose outputs are the named layers' activations."""
    import keras

    return keras.Model(model.inputs[0], [model.get_layer(n).output for n in layer_names])


def never_positive_shares(probe, images, batch_size=512):
    """Per output of an activation probe: the share of its units that are never positive on
    any of the images, computed in inference mode. A unit of a conv layer is a channel (never
    positive at any position of any image), of a dense layer a neuron. After ReLU such a unit
    is dead: zero output and zero gradient for every image. LeakyReLU's output is negative
    exactly where its input is, so the same count says how many units only the leak keeps
    learning."""
    import keras

    peaks = None
    for start in range(0, len(images), batch_size):
        outputs = probe(images[start:start + batch_size], training=False)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        batch = [np.asarray(keras.ops.max(keras.ops.cast(o, "float32"),
                                          axis=tuple(range(len(o.shape) - 1))))
                 for o in outputs]
        peaks = batch if peaks is None else [np.maximum(p, b) for p, b in zip(peaks, batch)]
    return [float(np.mean(p <= 0)) for p in peaks]


def unit_layers(model):
    """Every activation layer of the model whose units can die: after conv1-4 and dense, and
    after a strided variant's downsampling convolutions (down1_act-down3_act)."""
    names = {layer.name for layer in model.layers}
    return [*UNIT_LAYERS, *(n for n in ("down1_act", "down2_act", "down3_act") if n in names)]


def never_positive_units(model, images, layer_names=None):
    """{layer: {"units", "never_positive" (share)}} and the share over all those units
    (default: every activation layer, unit_layers)."""
    layer_names = layer_names or unit_layers(model)
    shares = never_positive_shares(activation_probe(model, layer_names), images)
    layers = {n: {"units": int(model.get_layer(n).output.shape[-1]), "never_positive": s}
              for n, s in zip(layer_names, shares)}
    pooled = (sum(v["units"] * v["never_positive"] for v in layers.values())
              / sum(v["units"] for v in layers.values()))
    return layers, float(pooled)


def summary_metrics(analysis):
    """The scalars of an analysis that tables, statistics and HParams use, by name."""
    return {"ece": analysis["ece"], "nll": analysis["nll"],
            "shift_consistency": analysis["shift_consistency"],
            **{f"shift_accuracy_{k}px": v for k, v in analysis["shift_accuracy"].items() if k != "0"}}


def feature_maps_of(model, image, layer_names):
    """Outputs of the named layers for one image, via a sub-model sharing the weights."""
    probe = activation_probe(model, layer_names)
    outputs = probe.predict(np.asarray(image)[None], verbose=0)
    return [(n, o[0]) for n, o in zip(layer_names, outputs)]


def figure_data(model, x_test, probabilities, labels):
    """Everything the filters, activation-map, misclassified and Grad-CAM figures draw from
    one run's model and (TTA) test predictions. Small (~50 KB compressed), so every run keeps
    its own and a report of runs from other sessions or machines needs no saved model."""
    predicted = probabilities.argmax(axis=1)
    confidence = probabilities[np.arange(len(predicted)), predicted]
    wrong = np.flatnonzero(predicted != labels)
    mistakes = wrong[np.argsort(confidence[wrong])[::-1][:N_MISTAKES]]  # most confident first
    right = predicted == labels
    correct = [np.flatnonzero(right & (labels == c))[0] for c in GRADCAM_CLASSES
               if np.any(right & (labels == c))]
    explained = np.array(correct + list(mistakes[:6]), dtype=np.int64)
    data = {"kernels": model.get_layer("conv1").get_weights()[0],
            "sample_label": np.int64(labels[SAMPLE_INDEX]),
            "gradcam_heatmaps": gradcam(model, x_test[explained], GRADCAM_LAYER,
                                        predicted[explained]).astype(np.float32)}
    for name, maps in feature_maps_of(model, x_test[SAMPLE_INDEX], MAP_LAYERS):
        data[f"map_{name}"] = maps.astype(np.float16)
    for group, index in (("mistakes", mistakes), ("gradcam", explained)):
        data.update({f"{group}_index": index, f"{group}_label": labels[index],
                     f"{group}_predicted": predicted[index],
                     f"{group}_confidence": confidence[index].astype(np.float32)})
    return data
