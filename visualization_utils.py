"""Every figure of the Fashion-MNIST lab, and the one-page report that gathers them.

Plot functions take data (arrays, dicts of per-epoch rows) and a path, write one PNG and
return the path; they never train anything, so `--report-only` can redraw all of them from
saved runs. `write_report` reads what the runner saved and calls them.
"""

import base64
import html
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no screen needed; must come before pyplot
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

import factor_analysis as fa  # noqa: E402
from run_store import atomic_write, temp_file_beside  # noqa: E402

DPI = 130
SAMPLE_INDEX = 0  # the fixed test image of the activation-map figure (an ankle boot)
# Eight curves stay apart by encoding the three factors, not by eight arbitrary colours.
OPTIMIZER_COLOR = {"adam": "#1f77b4", "sgd": "#d62728"}
DOWNSAMPLING_LINESTYLE = {"maxpool": "-", "strided": "--"}
ACTIVATION_MARKER = {"relu": "o", "leakyrelu": "^"}


def save_figure(fig, path):
    """Write a figure atomically (temp file + rename) and free it."""
    path = Path(path)
    fd, tmp = temp_file_beside(path, f".{path.stem}.", ".tmp.png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=DPI)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def variant_label(run):
    """'CNN_ReLU_MaxPool_Adam' -> 'ReLU · MaxPool · Adam' (the runner's names are the labels)."""
    return run["name"].removeprefix("CNN_").replace("_", " · ")


# ----------------------------------------------------------------------------- figures

def plot_training_curves(runs, path, subtitle=None):
    """2x2 panels of train/val accuracy and loss per epoch, one styled line per run.

    runs: dicts with name, activation, downsampling, optimizer, best_epoch and history (a list
    of per-epoch dicts with accuracy, val_accuracy, loss, val_loss).
    """
    panels = [("accuracy", "Training accuracy (dropout and flips on)", "accuracy (%)"),
              ("val_accuracy", "Validation accuracy", "accuracy (%)"),
              ("loss", "Training loss", "cross-entropy loss"),
              ("val_loss", "Validation loss", "cross-entropy loss")]
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5), sharex=True, layout="constrained")
    for ax, (key, title, ylabel) in zip(axes.flat, panels):
        for run in runs:
            epochs = np.arange(1, len(run["history"]) + 1)
            values = np.array([row[key] for row in run["history"]])
            if "accuracy" in key:
                values = 100 * values
            ax.plot(epochs, values, color=OPTIMIZER_COLOR[run["optimizer"]],
                    linestyle=DOWNSAMPLING_LINESTYLE[run["downsampling"]],
                    marker=ACTIVATION_MARKER[run["activation"]], markersize=4, linewidth=1.4,
                    alpha=0.85)
            best = run["best_epoch"]
            ax.plot(best, values[best - 1], marker="*", markersize=13, color="gold",
                    markeredgecolor="black", markeredgewidth=0.8, zorder=5)
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        # Zoom on the range that matters: epoch 1 (often far off) may leave the frame.
        shown = [row[key] for run in runs for row in run["history"][1 if len(run["history"]) > 2 else 0:]]
        low, high = min(shown), max(shown)
        if "accuracy" in key:
            ax.set_ylim(max(100 * low - 1, 0), min(100 * high + 1, 100.5))
        else:
            ax.set_ylim(max(low - 0.1 * (high - low) - 0.02, 0), high + 0.1 * (high - low) + 0.02)
    for ax in axes[1]:
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
    handles = [Line2D([], [], color=OPTIMIZER_COLOR[r["optimizer"]],
                      linestyle=DOWNSAMPLING_LINESTYLE[r["downsampling"]],
                      marker=ACTIVATION_MARKER[r["activation"]], label=variant_label(r)) for r in runs]
    handles.append(Line2D([], [], linestyle="", marker="*", markersize=13, color="gold",
                          markeredgecolor="black", label="best validation epoch" + ("" if subtitle else " (checkpoint kept)")))
    fig.legend(handles=handles, loc="outside lower center", ncol=3, fontsize=9,
               title="colour = optimizer, line = downsampling, marker = activation")
    fig.suptitle("Training curves of every variant" + (f"\n{subtitle}" if subtitle else ""),
                 fontsize=14)
    return save_figure(fig, path)


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


def plot_filters(kernels, path, title):
    """The first conv layer's kernels (kh, kw, 1, n) in a grid on one symmetric colour scale."""
    kernels = np.asarray(kernels)[:, :, 0, :]
    n = kernels.shape[-1]
    cols = 8
    rows = int(np.ceil(n / cols))
    limit = np.abs(kernels).max()
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols + 1.2, 1.3 * rows + 0.9),
                             layout="constrained")
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= n:
            ax.axis("off")
            continue
        image = ax.imshow(kernels[:, :, i], cmap="RdBu_r", vmin=-limit, vmax=limit)
        ax.set_title(f"#{i}", fontsize=8)
    fig.colorbar(image, ax=axes, shrink=0.8, label="weight (blue < 0 < red)")
    fig.suptitle(f"{title}\n{n} first-layer 3x3 kernels, one shared colour scale")
    return save_figure(fig, path)


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


def plot_misclassified(images, true_labels, predicted_labels, confidences, class_names, path,
                       title):
    """A grid of test images with their true class, predicted class and confidence."""
    n = len(images)
    cols = 6
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.1 * cols, 2.45 * rows + 0.6),
                             layout="constrained", squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        ax.imshow(np.asarray(images[i]).squeeze(), cmap="gray_r", vmin=0, vmax=1)
        ax.set_title(f"true: {class_names[true_labels[i]]}\n"
                     f"pred: {class_names[predicted_labels[i]]} ({100 * confidences[i]:.0f}%)",
                     fontsize=8.5, color="#b00000")
    fig.suptitle(f"{title}\nthe {n} most confident mistakes on the test set")
    return save_figure(fig, path)


def plot_per_class_accuracy(per_class, class_names, path,
                            title="Per-class test accuracy of every variant (best validation run first)"):
    """Heatmap: rows are runs, columns classes, cells the class's recall (accuracy) in %.

    per_class: dict label -> sequence of recalls (0-1), in class order.
    """
    names = list(per_class)
    values = 100 * np.array([per_class[n] for n in names])
    fig, ax = plt.subplots(figsize=(12, 0.5 * len(names) + 2.4), layout="constrained")
    sns.heatmap(values, annot=True, fmt=".1f", cmap="RdYlGn", vmin=max(values.min() - 2, 0),
                vmax=100, xticklabels=class_names, yticklabels=names, linewidths=0.5,
                cbar_kws={"label": "per-class accuracy (recall, %)"}, ax=ax)
    ax.tick_params(axis="x", rotation=30)
    ax.set_xlabel("true class")
    ax.set_title(title)
    return save_figure(fig, path)


def plot_factor_effects(effects, interaction_effects, points, path, display):
    """Left: each factor's main effect and each interaction with its 95% interval, zero
    marked. Right: every run's test accuracy as a point per seed, with the variant's mean
    and interval, so the seed-to-seed spread is visible.

    effects / interaction_effects: factor_analysis entries (effect, low, high, significant;
    family_low/family_high, when present, are drawn as a thinner, wider interval).
    points: list of (variant label, [accuracy per seed], (mean, low, high)), best first.
    """
    rows = [(f"{display[e['second']]} vs {display[e['first']]}", e) for e in effects]
    rows += [(f"{e['factor']} x {e['by']}\n(interaction)", e) for e in interaction_effects]
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, max(4.5, 0.55 * len(points) + 2)),
                                      layout="constrained", width_ratios=[1, 1.15])
    for y, (label, e) in enumerate(rows[::-1]):
        color = "#d62728" if e["significant"] else "#555555"
        if np.isfinite(e.get("family_low", np.nan)):  # thin: the Bonferroni interval
            left.plot([100 * e["family_low"], 100 * e["family_high"]], [y, y], color=color,
                      linewidth=0.9, marker="|", markersize=9)
        if np.isfinite(e["low"]):
            left.plot([100 * e["low"], 100 * e["high"]], [y, y], color=color, linewidth=2.6)
        left.plot(100 * e["effect"], y, "o", color=color, markersize=8)
        left.annotate(f"{100 * e['effect']:+.2f} pp", (100 * e["effect"], y), xytext=(0, 8),
                      textcoords="offset points", ha="center", fontsize=8.5, color=color,
                      bbox=dict(facecolor="white", edgecolor="none", alpha=0.85, pad=0.6))
    left.axvline(0, color="black", linewidth=1)
    left.set_yticks(range(len(rows)), [label for label, _ in rows[::-1]])
    left.set_ylim(-0.7, len(rows) - 0.3)
    left.set_xlabel("difference in test accuracy (percentage points)")
    n_pairs = rows[0][1]["n"] if rows else 0
    family = (f"; thin: Bonferroni over {rows[0][1]['family_size']}"
              if rows and "family_size" in rows[0][1] else "")
    left.set_title(f"Effects, thick: {fa.CONFIDENCE:.0%} paired t interval{family}\n"
                   f"({n_pairs} pairs per main effect; red: thick interval excludes zero)",
                   fontsize=11)
    left.grid(axis="x", alpha=0.3)

    for y, (label, values, (mean, low, high)) in enumerate(points[::-1]):
        right.plot(100 * np.asarray(values), np.full(len(values), y), "o", color="#1f77b4",
                   alpha=0.6, markersize=6, label="one seed" if y == 0 else None)
        if np.isfinite(low):
            right.plot([100 * low, 100 * high], [y, y], color="black", linewidth=1.5)
        right.plot(100 * mean, y, "D", markerfacecolor="none", markeredgecolor="black",
                   markersize=10, markeredgewidth=1.5,
                   label="mean (bar: 95% interval)" if y == 0 else None)
    right.set_yticks(range(len(points)), [label for label, _, _ in points[::-1]])
    right.margins(x=0.08)
    right.set_ylim(-0.7, len(points) - 0.3)
    right.set_xlabel("test accuracy (%)")
    right.set_title("Test accuracy of every variant, one point per seed", fontsize=11)
    right.grid(axis="x", alpha=0.3)
    right.legend(loc="lower right", fontsize=8.5)
    n_seeds = max((len(values) for _, values, _ in points), default=0)
    fig.suptitle(f"Which design choices matter? ({n_seeds} seed{'s' if n_seeds != 1 else ''} "
                 "per variant)", fontsize=14)
    return save_figure(fig, path)


def mean_over_seeds(runs):
    """One pseudo-run per variant whose history is the per-epoch mean over its seeds, for
    curves and heatmaps that would be unreadable with a line per seed."""
    by_name = {}
    for run in runs:
        by_name.setdefault(run["name"], []).append(run)
    merged = []
    for name, group in by_name.items():
        epochs = min(len(r["history"]) for r in group)
        history = [{k: float(np.mean([r["history"][e][k] for r in group]))
                    for k in ("accuracy", "val_accuracy", "loss", "val_loss")} for e in range(epochs)]
        best = 1 + int(np.argmax([row["val_accuracy"] for row in history])) if history else 1
        merged.append({**group[0], "history": history, "best_epoch": best, "n_seeds": len(group)})
    return merged


# ----------------------------------------------------------------------------- report

def feature_maps_of(model, image, layer_names):
    """Outputs of the named layers for one image, via a sub-model sharing the weights."""
    import keras  # only the report needs Keras here

    probe = keras.Model(model.inputs, [model.get_layer(n).output for n in layer_names])
    outputs = probe.predict(np.asarray(image)[None], verbose=0)
    return [(n, o[0]) for n, o in zip(layer_names, outputs)]


def results_rows(runs):
    """The report's table as (header, rows of strings)."""
    header = ["variant", "seed", "trainable params", "epochs", "best epoch", "train acc",
              "val acc", "test acc", "test loss", "train time"]
    rows = []
    for r in runs:
        if r["status"] != "ok":
            rows.append([r["name"], str(r["seed"]), f"{r['trainable_params']:,}", str(r["epochs_run"]),
                         "failed", "", "", "", "", ""])
            continue
        rows.append([r["name"], str(r["seed"]), f"{r['trainable_params']:,}", str(r["epochs_run"]),
                     str(r["best_epoch"]), f"{100 * r['train_accuracy']:.2f}%",
                     f"{100 * r['val_accuracy']:.2f}%", f"{100 * r['test_accuracy']:.2f}%",
                     f"{r['test_loss']:.4f}", f"{r['train_seconds'] / 60:.1f} min"])
    return header, rows


def classification_rows(report, class_names):
    header = ["class", "precision", "recall", "F1", "support"]
    rows = [[c, f"{report[c]['precision']:.4f}", f"{report[c]['recall']:.4f}",
             f"{report[c]['f1-score']:.4f}", str(int(report[c]["support"]))]
            for c in [*class_names, "macro avg", "weighted avg"]]
    return header, rows


def markdown_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def html_table(header, rows):
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def smoke_check_warning(settings):
    """A sentence for the top of a report trained on a subset (--quick, --subset): its numbers
    check the pipeline and say nothing about the design choices."""
    if settings.get("subset"):
        return (f"Smoke check of the pipeline, not results: trained on {settings['subset']:,} "
                f"images for {settings.get('epochs')} epoch(s). Differences between variants "
                "here are noise; run without --quick/--subset for comparisons.")
    return None


def settings_rows(run):
    """A run's settings and environment as a two-column table."""
    rows = [[key, str(value)] for key, value in run.get("settings", {}).items()]
    env = run.get("environment")
    if env:
        rows += [["device", env["device"]], ["backend", env["backend"]],
                 ["XLA", "on" if env["xla"] else "off"], ["replicas", str(env["replicas"])],
                 ["TensorFlow / Keras", f"{env['packages'].get('tensorflow')} / "
                                        f"{env['packages'].get('keras')}"]]
    return ["setting", "value"], rows


HTML_STYLE = """.warning{background:#fff3cd;border:1px solid #e0c36a;padding:.6em 1em}
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:14px}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}th{background:#f3f3f3}figure{margin:2em 0}
img{max-width:100%;border:1px solid #eee}figcaption{color:#555;font-size:14px;margin-top:.4em}"""


def statistics_sections(runs, factors, display):
    """The multi-seed comparison as (title, intro, header, rows) tables, plus the data of the
    factor-effects figure; empty when there is nothing to compare."""
    ok = [r for r in runs if r["status"] == "ok"]
    summary = fa.variant_summary(ok, factors)
    effects, pair_effects = fa.factor_effects(ok, factors), fa.interactions(ok, factors)
    # All six are read together, so each also gets a family-wise (Bonferroni) interval.
    adjusted = fa.family_adjusted(effects + pair_effects)
    effects, pair_effects = adjusted[:len(effects)], adjusted[len(effects):]
    n_seeds = len({r["seed"] for r in ok})

    def pm(stat, scale=100, digits=2, unit="%"):
        if not np.isfinite(stat["sd"]):
            return f"{scale * stat['mean']:.{digits}f}{unit}"
        return (f"{scale * stat['mean']:.{digits}f}{unit} ± {scale * stat['sd']:.{digits}f} "
                f"[{scale * stat['low']:.{digits}f}, {scale * stat['high']:.{digits}f}]")

    def interval(low, high):
        return f"[{100 * low:+.2f}, {100 * high:+.2f}]" if np.isfinite(low) else "n/a"

    def verdict(effect):
        if effect["family_significant"]:
            return "significant, also after Bonferroni"
        return ("significant at 95%, not after Bonferroni" if effect["significant"]
                else "not significant")

    tables = [("Variants over seeds",
               f"Mean ± sample standard deviation [{fa.CONFIDENCE:.0%} t interval of the mean] "
               f"over {n_seeds} seed(s); best mean test accuracy first.",
               ["variant", "seeds", "test acc", "val acc", "test loss", "train time (min)"],
               [[e["name"], str(e["n"]), pm(e["test_accuracy"]), pm(e["val_accuracy"]),
                 pm(e["test_loss"], 1, 4, ""), pm(e["train_seconds"], 1 / 60, 1, "")]
                for e in summary])]
    if effects:
        tables.append((
            "Factor effects on test accuracy",
            "Main effect: mean of the paired differences (second level minus first) over the "
            "other two factors and the seeds, with a paired t interval; an interaction is the "
            "change of the first factor's effect between the levels of the second. The "
            f"Bonferroni interval is wide enough for all {len(adjusted)} comparisons to hold at "
            f"once with {fa.CONFIDENCE:.0%} confidence: use it when reading the table as a "
            "whole.",
            ["comparison", "effect (pp)", f"{fa.CONFIDENCE:.0%} interval (pp)",
             f"Bonferroni interval (x{len(adjusted)})", "pairs", "verdict"],
            [[(f"{display[e['second']]} vs {display[e['first']]}" if "by" not in e
               else f"{e['factor']} x {e['by']} (interaction)"), f"{100 * e['effect']:+.2f}",
              interval(e["low"], e["high"]), interval(e["family_low"], e["family_high"]),
              str(e["n"]), verdict(e)]
             for e in adjusted]))
    speed = fa.convergence(ok)
    thresholds = fa.CONVERGENCE_THRESHOLDS

    def reached(entry, t):
        c = entry[t]
        if not c["reached"]:
            return f"never (0/{entry['n']})"
        return f"{c['epochs']:.1f} ep, {c['seconds'] / 60:.1f} min ({c['reached']}/{entry['n']})"

    tables.append((
        "Convergence speed",
        "Epochs and minutes of training until validation accuracy first reached each level, "
        "mean over the seeds that reached it (how many did, in brackets).",
        ["variant"] + [f"to {100 * t:.0f}% val acc" for t in thresholds],
        [[e["name"]] + [reached(e, t) for t in thresholds] for e in speed]))
    by_name = {}
    for r in ok:
        by_name.setdefault(r["name"], []).append(r["test_accuracy"])
    points = [(variant_label(e), by_name[e["name"]],
               (e["test_accuracy"]["mean"], e["test_accuracy"]["low"], e["test_accuracy"]["high"]))
              for e in summary]
    return tables, effects, pair_effects, points


def write_report(output_dir, runs, load_model, x_test, class_names, factors, display):
    """Every figure, report.html and summary.md from saved runs; returns the figure paths.

    runs: the runner's metrics records, best validation accuracy first, each with its
    run_dir and history. load_model: path -> Keras model. x_test: test images.
    factors: {factor: (first level, second level)}; display: level -> label.
    """
    output_dir = Path(output_dir)
    ok = [r for r in runs if r["status"] == "ok"]
    if not ok:
        return []
    best = ok[0]
    best_dir = Path(best["run_dir"])
    model = load_model(best_dir / "model.keras")
    saved = np.load(best_dir / "predictions.npz")
    probabilities, labels = saved["probabilities"], saved["labels"]
    predicted = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != labels)
    worst = wrong[np.argsort(probabilities[wrong, predicted[wrong]])[::-1][:18]]
    tag = best["name"]
    best_title = f"{best['name']} (seed {best['seed']}; best on validation)"
    n_seeds = len({r["seed"] for r in ok})
    per_variant = mean_over_seeds(ok) if n_seeds > 1 else ok
    over = f" (mean over {n_seeds} seeds)" if n_seeds > 1 else ""

    mean_recall = np.mean([[r["classification_report"][c]["recall"] for c in class_names]
                           for r in ok], axis=0)
    hardest = ", ".join(f"{class_names[i]} ({100 * mean_recall[i]:.1f}%)"
                        for i in np.argsort(mean_recall)[:3])
    recalls = {}
    for r in ok:
        recalls.setdefault(variant_label(r), []).append(
            [r["classification_report"][c]["recall"] for c in class_names])
    if n_seeds == 1:
        recalls = {f"{r_label} (seed {ok[0]['seed']})": v for r_label, v in recalls.items()}
    figures = [
        (plot_training_curves(per_variant, output_dir / "model_comparison.png",
                              f"mean over {n_seeds} seeds per epoch; star: best epoch of the mean "
                              "validation curve" if n_seeds > 1 else None),
         f"Training and validation accuracy and loss per epoch for every variant{over}; the "
         "star marks the epoch with the best validation accuracy, whose checkpoint was evaluated."),
        (plot_confusion_matrix(best["confusion_matrix"], class_names,
                               output_dir / f"{tag}_confusion_matrix.png", best_title),
         f"Test-set confusion matrix of {best['name']} (seed {best['seed']}): rows are true "
         "classes, columns predictions, each cell with its count and share of the row."),
        (plot_filters(model.get_layer("conv1").get_weights()[0],
                      output_dir / f"{tag}_filters.png", best_title),
         "The 32 learned 3x3 kernels of the first convolution on one shared colour scale "
         "(red positive, blue negative weights)."),
        (plot_activation_maps(x_test[SAMPLE_INDEX],
                              feature_maps_of(model, x_test[SAMPLE_INDEX],
                                              ["act1", "act2", "act3", "act4"]),
                              output_dir / f"{tag}_activation_maps.png", best_title),
         f"What each conv layer of {best['name']} responds to in test image "
         f"{SAMPLE_INDEX} ({class_names[labels[SAMPLE_INDEX]]}), layer by layer; later layers "
         "work at half and quarter resolution."),
        (plot_misclassified(x_test[worst], labels[worst], predicted[worst],
                            probabilities[worst, predicted[worst]], class_names,
                            output_dir / f"{tag}_misclassified.png", best_title),
         "The test images the best model gets wrong with the highest confidence, with the "
         "true class, the predicted class and the model's confidence."),
        (plot_per_class_accuracy({k: np.mean(v, axis=0) for k, v in recalls.items()},
                                 class_names, output_dir / "per_class_accuracy.png",
                                 *([f"Per-class test accuracy of every variant, mean over {n_seeds} "
                                    "seeds (best validation run's variant first)"]
                                   if n_seeds > 1 else [])),
         f"Per-class test accuracy of every variant{over}; hardest on average: {hardest}."),
    ]
    tables, effects, pair_effects, points = statistics_sections(runs, factors, display)
    if effects:
        figures.append((
            plot_factor_effects(effects, pair_effects, points, output_dir / "factor_effects.png",
                                display),
            f"Left: the effect of each design choice on test accuracy with its {fa.CONFIDENCE:.0%} "
            "paired t interval (red where the interval excludes zero). Right: each variant's "
            "test accuracy per seed (points) with its mean and interval."))
    effect_lines = [fa.effect_sentence(e, display) for e in effects + pair_effects]

    results = results_rows(runs)
    report = classification_rows(best["classification_report"], class_names)
    settings = settings_rows(best)
    warning = smoke_check_warning(best.get("settings", {}))
    summary = ["# Fashion-MNIST CNN design-choice lab: results\n"]
    if warning:
        summary += [f"> **{warning}**\n"]
    summary += [f"Best on validation: **{best['name']}** (seed {best['seed']}), test accuracy "
                f"{100 * best['test_accuracy']:.2f}%.\n",
                "## Settings\n", markdown_table(*settings), ""]
    if effect_lines:
        summary += ["## What the data support\n", *[f"- {line}" for line in effect_lines], ""]
    for title, intro, header, rows in tables:
        summary += [f"## {title}\n", intro + "\n", markdown_table(header, rows), ""]
    summary += ["## Runs (best validation accuracy first)\n", markdown_table(*results), "",
                f"## Classification report of {best['name']} (seed {best['seed']})\n",
                markdown_table(*report), "", "## Figures\n"]
    summary += [f"![{p.stem}]({p.name})\n\n{caption}\n" for p, caption in figures]
    atomic_write(output_dir / "summary.md", "\n".join(summary) + "\n")

    def embedded(p):
        return "data:image/png;base64," + base64.b64encode(p.read_bytes()).decode("ascii")

    page = [f"<!doctype html><html><head><meta charset='utf-8'><title>Fashion-MNIST CNN lab"
            f"</title><style>{HTML_STYLE}</style></head><body>",
            "<h1>Fashion-MNIST CNN design-choice lab</h1>",
            *([f"<p class='warning'><b>{html.escape(warning)}</b></p>"] if warning else []),
            f"<p>Best on validation: <b>{html.escape(best['name'])}</b> (seed {best['seed']}), "
            f"test accuracy {100 * best['test_accuracy']:.2f}%.</p>",
            "<h2>Settings</h2>", html_table(*settings)]
    if effect_lines:
        page += ["<h2>What the data support</h2><ul>",
                 *[f"<li>{html.escape(line)}</li>" for line in effect_lines], "</ul>"]
    for title, intro, header, rows in tables:
        page += [f"<h2>{html.escape(title)}</h2><p>{html.escape(intro)}</p>", html_table(header, rows)]
    page += ["<h2>Runs</h2><p>Sorted by validation accuracy, which chose the best model; the "
             "test set was used only for these final numbers.</p>", html_table(*results),
             f"<h2>Classification report of {html.escape(best['name'])}</h2>", html_table(*report),
             "<h2>Figures</h2>"]
    page += [f"<figure><img alt='{p.stem}' src='{embedded(p)}'><figcaption>{html.escape(c)}"
             f"</figcaption></figure>" for p, c in figures]
    page.append("</body></html>")
    atomic_write(output_dir / "report.html", "\n".join(page) + "\n")
    return [p for p, _ in figures]
