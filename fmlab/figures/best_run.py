"""The best run's figures: its confusion matrix, first-layer filters, activation maps for a
sample image, most confident mistakes and Grad-CAM heat maps.

Each takes data (arrays the run saved in figures.npz) and a path, writes one PNG and returns
the path; drawn only when what it shows changed (figure_cache).
"""

import matplotlib

matplotlib.use("Agg")  # no screen needed; must come before pyplot
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import seaborn as sns  # noqa: E402

from fmlab.figures.figure_cache import drawn_only_when_changed, save_figure  # noqa: E402


def image_grid(n, cols, cell, pad):
    """A figure of ceil(n / cols) x cols image panels without ticks, the panels past n blank:
    cell = (width, height) of a panel, pad = (width, height) added for titles and colour bar."""
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cell[0] * cols + pad[0], cell[1] * rows + pad[1]),
                             layout="constrained", squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, axes


def prediction_title(true_label, predicted_label, confidence, class_names):
    return (f"true: {class_names[true_label]}\n"
            f"pred: {class_names[predicted_label]} ({100 * confidence:.0f}%)")


@drawn_only_when_changed
def plot_confusion_matrix(matrix, class_names, path, title):
    """Heatmap coloured by row-normalised rate, each cell annotated with count and rate."""
    matrix = np.asarray(matrix)
    rates = matrix / matrix.sum(axis=1, keepdims=True).clip(min=1)
    labels = np.array([[f"{c}\n{100 * r:.1f}%" if c else "" for c, r in zip(crow, rrow)]
                       for crow, rrow in zip(matrix, rates)])
    fig, ax = plt.subplots(figsize=(10, 8.5), layout="constrained")
    sns.heatmap(100 * rates, annot=labels, fmt="", cmap="Blues", vmin=0, vmax=100, square=True,
                xticklabels=class_names, yticklabels=class_names, annot_kws={"fontsize": 7.5},
                linewidths=0.5, linecolor="white",
                cbar_kws={"label": "share of the true class (%)", "shrink": 0.8}, ax=ax)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.tick_params(axis="x", rotation=35)
    ax.tick_params(axis="y", rotation=0)
    ax.set_title(f"{title}\n(count and share of each true class; "
                 f"{matrix.trace():,} of {matrix.sum():,} correct)")
    return save_figure(fig, path)


@drawn_only_when_changed
def plot_filters(kernels, path, title):
    """The first conv layer's kernels (kh, kw, 1, n) in a grid on one symmetric colour scale."""
    kernels = np.asarray(kernels)[:, :, 0, :]
    n = kernels.shape[-1]
    limit = np.abs(kernels).max()
    fig, axes = image_grid(n, 8, cell=(1.3, 1.3), pad=(1.2, 0.9))
    for i, ax in zip(range(n), axes.flat):
        image = ax.imshow(kernels[:, :, i], cmap="RdBu_r", vmin=-limit, vmax=limit)
        ax.set_title(f"#{i}", fontsize=8)
    fig.colorbar(image, ax=axes, shrink=0.8, label="weight (blue < 0 < red)")
    fig.suptitle(f"{title}\n{n} first-layer 3x3 kernels, one shared colour scale")
    return save_figure(fig, path)


@drawn_only_when_changed
def plot_activation_maps(image, feature_maps, path, title, per_layer=16):
    """The input image beside each layer's most active feature maps, one row per layer.

    feature_maps: list of (layer name, array (h, w, channels)).
    """
    cols = 8
    rows_per_layer = int(np.ceil(per_layer / cols))
    n_rows = rows_per_layer * len(feature_maps)
    fig = plt.figure(figsize=(15, 1.55 * n_rows + 1.0), layout="constrained")
    outer = fig.add_gridspec(1, 2, width_ratios=[1.3, cols])
    ax = fig.add_subplot(outer[0])
    ax.imshow(np.asarray(image).squeeze(), cmap="gray_r", vmin=0, vmax=1)
    ax.set_title("input image", fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    layers_grid = outer[1].subgridspec(len(feature_maps), 1)
    for row, (name, maps) in enumerate(feature_maps):
        maps = np.asarray(maps)
        order = np.argsort(maps.mean(axis=(0, 1)))[::-1][:per_layer]  # most active first
        grid = layers_grid[row].subgridspec(rows_per_layer, cols, wspace=0.05, hspace=0.05)
        for k, channel in enumerate(order):
            ax = fig.add_subplot(grid[k // cols, k % cols])
            ax.imshow(maps[:, :, channel], cmap="viridis")
            ax.set_xticks([])
            ax.set_yticks([])
            if k % cols == 0:
                ax.set_ylabel(f"{name}\n{maps.shape[0]}x{maps.shape[1]}x{maps.shape[2]}"
                              if k == 0 else "", fontsize=9)
            ax.set_title(f"ch {channel}", fontsize=7, pad=2)
    fig.suptitle(f"{title}\nfeature maps after each conv layer's activation "
                 f"({per_layer} most active channels per layer, each on its own colour scale)")
    return save_figure(fig, path)


@drawn_only_when_changed
def plot_misclassified(images, true_labels, predicted_labels, confidences, class_names, path,
                       title):
    """A grid of test images with their true class, predicted class and confidence."""
    n = len(images)
    fig, axes = image_grid(n, 6, cell=(2.1, 2.45), pad=(0, 0.6))
    for i, ax in zip(range(n), axes.flat):
        ax.axis("off")
        ax.imshow(np.asarray(images[i]).squeeze(), cmap="gray_r", vmin=0, vmax=1)
        ax.set_title(prediction_title(true_labels[i], predicted_labels[i], confidences[i],
                                      class_names), fontsize=8.5, color="#b00000")
    fig.suptitle(f"{title}\nthe {n} most confident mistakes on the test set")
    return save_figure(fig, path)


@drawn_only_when_changed
def plot_gradcam(images, heatmaps, true_labels, predicted_labels, confidences, class_names,
                 path, title):
    """Test images with their Grad-CAM heat map overlaid (bilinear upsampling to 28x28),
    true and predicted class and confidence; mistakes titled in red."""
    n = len(images)
    fig, axes = image_grid(n, 6, cell=(2.2, 2.55), pad=(1, 0.9))
    for i, ax in zip(range(n), axes.flat):
        ax.axis("off")
        image = np.asarray(images[i]).squeeze()
        ax.imshow(image, cmap="gray_r", vmin=0, vmax=1)
        overlay = ax.imshow(heatmaps[i], cmap="jet", alpha=0.45, vmin=0, vmax=1,
                            extent=(-0.5, image.shape[1] - 0.5, image.shape[0] - 0.5, -0.5),
                            interpolation="bilinear")
        wrong = true_labels[i] != predicted_labels[i]
        ax.set_title(prediction_title(true_labels[i], predicted_labels[i], confidences[i],
                                      class_names), fontsize=8.5,
                     color="#b00000" if wrong else "#205020")
    fig.colorbar(overlay, ax=axes, shrink=0.6, label="Grad-CAM (share of the image's peak)")
    fig.suptitle(title, fontsize=11)
    return save_figure(fig, path)
