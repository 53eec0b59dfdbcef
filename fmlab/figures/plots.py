"""The figures that compare variants: training curves, per-class accuracy, factor effects,
calibration, shift robustness, learning-rate sensitivity, dying units and the epoch frontier
(the best run's own figures are in best_run, the claims' in claims).

Plot functions take data (arrays, dicts of per-epoch rows) and a path, write one PNG and
return the path; they never train or compute statistics, so `--report-only` can redraw all
of them from saved runs. report.write_report reads what the runner saved and calls them.

A figure is drawn only when what it shows changed (figure_cache: a digest of its data and of
this file in the PNG's metadata). The report is redrawn as the runs of a grid finish; most of
its figures stay the same from one run to the next.
"""

import matplotlib

matplotlib.use("Agg")  # no screen needed; must come before pyplot
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from fmlab.stats import factor_analysis as fa  # noqa: E402
from fmlab.figures.figure_cache import drawn_only_when_changed, save_figure  # noqa: E402
from fmlab.core.levels import DISPLAY, LEVELS, level_order, name_suffix  # noqa: E402
from fmlab.store.run_store import run_label  # noqa: E402

# Curves stay apart by encoding the three factors, not by arbitrary colours: every level's
# style is in its registry entry (levels.py): optimizer = colour, downsampling = line style,
# activation = marker. A level added there is drawn like the others.
OPTIMIZER_COLOR = {name: level.style for name, level in LEVELS["optimizer"].items()}
DOWNSAMPLING_LINESTYLE = {name: level.style for name, level in LEVELS["downsampling"].items()}
ACTIVATION_MARKER = {name: level.style for name, level in LEVELS["activation"].items()}
LEVEL_NAME = DISPLAY


def variant_label(run):
    """'CNN_ReLU_MaxPool_Adam' -> 'ReLU · MaxPool · Adam' (the runner's names are the labels)."""
    return run["name"].removeprefix("CNN_").replace("_", " · ")


def style_of(run):
    """Line style of a variant in every multi-variant figure: colour = optimizer, line =
    downsampling, marker = activation; a variant at a level away from the default of a factor
    beyond those three (its name has a suffix) has hollow markers."""
    style = dict(color=OPTIMIZER_COLOR[run["optimizer"]],
                 linestyle=DOWNSAMPLING_LINESTYLE[run["downsampling"]],
                 marker=ACTIVATION_MARKER[run["activation"]])
    if has_suffix(run):
        style.update(markerfacecolor="white")
    return style


def has_suffix(run):
    """Whether the variant's name carries an extra factor's level (CNN_A_D_O_suffix)."""
    return bool(name_suffix(run.get("name", "")))


def channels_title(runs):
    title = "colour = optimizer, line = downsampling, marker = activation"
    if any(has_suffix(r) for r in runs):
        title += "; hollow = the level named after them"
    return title


# ----------------------------------------------------------------------------- figures

@drawn_only_when_changed
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
            ax.plot(epochs, values, markersize=4, linewidth=1.4, alpha=0.85, **style_of(run))
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
    handles = [Line2D([], [], label=variant_label({"name": run_label(r)}),  # with its lr multiplier
                      **style_of(r)) for r in runs]
    handles.append(Line2D([], [], linestyle="", marker="*", markersize=13, color="gold",
                          markeredgecolor="black", label="best validation epoch" + ("" if subtitle else " (checkpoint kept)")))
    fig.legend(handles=handles, loc="outside lower center", ncol=3, fontsize=9,
               title=channels_title(runs))
    fig.suptitle("Training curves of every variant" + (f"\n{subtitle}" if subtitle else ""),
                 fontsize=14)
    return save_figure(fig, path)


@drawn_only_when_changed
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


def plot_seed_points(ax, points):
    """One row per variant, best first: each seed's value as a point, the mean as a diamond
    with its 95% interval. points: list of (label, [value per seed], (mean, low, high))."""
    for y, (label, values, (mean, low, high)) in enumerate(points[::-1]):
        ax.plot(100 * np.asarray(values), np.full(len(values), y), "o", color="#1f77b4",
                alpha=0.6, markersize=6, label="one seed" if y == 0 else None)
        if np.isfinite(low):
            ax.plot([100 * low, 100 * high], [y, y], color="black", linewidth=1.5)
        ax.plot(100 * mean, y, "D", markerfacecolor="none", markeredgecolor="black",
                markersize=10, markeredgewidth=1.5,
                label="mean (bar: 95% interval)" if y == 0 else None)
    ax.set_yticks(range(len(points)), [label for label, _, _ in points[::-1]])
    ax.set_ylim(-0.7, len(points) - 0.3)


@drawn_only_when_changed
def plot_factor_effects(effects, interaction_effects, points, path, display,
                        title="Which design choices matter?"):
    """Left: each factor's main effect and each interaction with its 95% interval, zero
    marked. Right: every run's test accuracy as a point per seed, with the variant's mean
    and interval, so the seed-to-seed spread is visible.

    effects / interaction_effects: factor_analysis entries (level, reference, effect, low,
    high, df, significant;
    family_low/family_high, when present, are drawn as a thinner, wider interval).
    points: list of (variant label, [accuracy per seed], (mean, low, high)), best first.
    title: the figure's title (the report adds how many seeds each variant has).
    """
    rows = [(fa.comparison_label(e, display), e) for e in effects]
    rows += [(fa.comparison_label(e, display).replace(" x ", " x\n") + " (interaction)", e)
             for e in interaction_effects]
    longest = max((len(label) for label, _, _ in points), default=0)  # a fourth factor's names
    fig, (left, right) = plt.subplots(1, 2, figsize=(14 + 0.1 * max(0, longest - 28),
                                                     max(4.5, 0.55 * len(points) + 2)),
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
    df = rows[0][1]["df"] if rows else 0
    family = (f"; thin: Bonferroni over {rows[0][1]['family_size']}"
              if rows and "family_size" in rows[0][1] else "")
    left.set_title(f"Effects, thick: {fa.CONFIDENCE:.0%} interval{family}\n"
                   f"(factorial model, {df:.0f} residual df; red: thick interval excludes zero)",
                   fontsize=11)
    left.grid(axis="x", alpha=0.3)

    plot_seed_points(right, points)
    right.margins(x=0.08)
    right.set_xlabel("test accuracy (%)")
    right.set_title("Test accuracy of every variant, one point per seed", fontsize=11)
    right.grid(axis="x", alpha=0.3)
    right.legend(loc="lower right", fontsize=8.5)
    fig.suptitle(title, fontsize=14)
    return save_figure(fig, path)


@drawn_only_when_changed
def plot_calibration(diagrams, path):
    """Reliability diagrams, one panel per variant: accuracy against confidence in equal-width
    bins, the diagonal (perfect calibration), the gap shaded, and the share of predictions
    per bin underneath.

    diagrams: list of (label, {"count", "correct", "confidence"} per bin (sums over seeds),
    (ECE mean, low, high)), in the order to draw.
    """
    bins = len(diagrams[0][1]["count"])  # as many as the analysis used
    cols = 4
    rows = int(np.ceil(len(diagrams) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.9 * rows + 0.8), squeeze=False,
                             layout="constrained", sharex=True, sharey=True)
    edges = np.linspace(0, 1, bins + 1)
    for ax, (label, sums, (ece, low, high)) in zip(axes.flat, diagrams):
        count = np.asarray(sums["count"], dtype=float)
        with np.errstate(invalid="ignore", divide="ignore"):
            accuracy = np.asarray(sums["correct"]) / count
            confidence = np.asarray(sums["confidence"]) / count
        filled = count > 0
        ax.bar(edges[:-1][filled], accuracy[filled], width=1 / bins, align="edge",
               color="#1f77b4", edgecolor="white", linewidth=0.5, label="accuracy")
        ax.bar(edges[:-1][filled], (confidence - accuracy)[filled], bottom=accuracy[filled],
               width=1 / bins, align="edge", color="#d62728", alpha=0.35, edgecolor="#d62728",
               linewidth=0.5, label="gap to mean confidence (red: over-, purple: under-confident)")
        ax.plot([0, 1], [0, 1], "--", color="black", linewidth=1, label="perfect calibration")
        share = ax.inset_axes([0.08, 0.66, 0.4, 0.2])  # upper left: empty for a sane model
        share.bar(edges[:-1], count / count.sum(), width=1 / bins, align="edge", color="#777777")
        share.set_yscale("log")
        share.set_ylim(1e-4, 1)
        share.set_xlim(0, 1)
        share.set_xticks([])
        share.tick_params(labelsize=6)
        share.set_title("share per bin (log)", fontsize=6.5, pad=1)
        interval = f" [{100 * low:.2f}, {100 * high:.2f}]" if np.isfinite(low) else ""
        ax.set_title(f"{label}\nECE {100 * ece:.2f}%{interval}", fontsize=9.5)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(diagrams):]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("confidence (max probability)")
    for ax in axes[:, 0]:
        ax.set_ylabel("accuracy")
    fig.legend(*axes.flat[0].get_legend_handles_labels(), loc="outside lower center", ncols=3,
               fontsize=9)
    fig.suptitle(f"Reliability diagrams on the test set ({bins} equal-width confidence bins, "
                 "all seeds pooled; ECE: mean over seeds [95% interval])", fontsize=12)
    return save_figure(fig, path)


@drawn_only_when_changed
def plot_shift_robustness(curves, consistency, path, max_shift=3):
    """Left: test accuracy against the shift in pixels, one styled line per variant (mean
    over the seeds; each image shifted in a random one of the eight directions). Right:
    consistency per variant, the seeds as points, mean with interval.

    curves: list of (run-like dict with activation/downsampling/optimizer, label,
    {shift: accuracy}); consistency: list of (label, [value per seed], (mean, low, high)).
    """
    longest = max((len(label) for label, _, _ in consistency), default=0)  # a fourth factor's names
    wide = longest > 28
    fig, (left, right) = plt.subplots(1, 2, figsize=(14 + 0.1 * max(0, longest - 28),
                                                     5.6 + 0.25 * len(curves) * wide),
                                      layout="constrained", width_ratios=[1, 1.1])
    for run, label, accuracy in curves:
        shifts = sorted(accuracy, key=int)
        left.plot([int(k) for k in shifts], [100 * accuracy[k] for k in shifts], label=label,
                  markersize=5, linewidth=1.4, alpha=0.9, **style_of(run))
    left.set_xticks(range(max_shift + 1))
    left.set_xlabel("shift (pixels, in a random one of the 8 directions per image, zero fill)")
    left.set_ylabel("test accuracy (%)")
    left.set_title("Accuracy of shifted test images")
    left.grid(alpha=0.3)
    if wide:  # long names would cover the curves: the legend goes below them
        left.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=1)
    else:
        left.legend(fontsize=8)
    plot_seed_points(right, consistency)
    right.margins(x=0.1)
    right.set_xlabel("consistency (%): same class for two random shifts of an image")
    right.set_title(f"Consistency under random shifts of up to {max_shift} px (Zhang 2019)")
    right.grid(axis="x", alpha=0.3)
    right.legend(loc="lower right", fontsize=8.5)
    fig.suptitle("Shift robustness on the test set", fontsize=14)
    return save_figure(fig, path)


@drawn_only_when_changed
def plot_lr_sensitivity(curves, path, band=0.005):
    """Validation accuracy against the peak learning rate (log axis), one panel per
    optimizer (one accuracy scale for both) and one styled line per variant; the chosen point
    a star, failed runs a cross at the panel's floor (joined faintly to the variant's line),
    the recipe's shared peak dotted.

    curves: list of (run-like dict with the factors, label, [(multiplier, peak lr, val
    accuracy or None)], chosen multiplier), one per variant.
    """
    optimizers = [o for o in OPTIMIZER_COLOR if any(run["optimizer"] == o for run, *_ in curves)]
    fig, axes = plt.subplots(1, len(optimizers), figsize=(6.6 * len(optimizers), 5.2),
                             layout="constrained", squeeze=False, sharey=True)  # flatness compares
    values = [100 * v for *_, points, _ in curves for _, _, v in points if v is not None]
    floor = min(values, default=0) - 0.4
    ceiling = max(values, default=100) + 0.25  # room for the chosen point's star
    diverged = any(v is None for *_, points, _ in curves for *_, v in points)
    bottom = floor - 0.3 if diverged else min(values, default=0) - 0.25  # crosses need room
    for ax, optimizer in zip(axes[0], optimizers):
        for run, label, points, chosen in curves:
            if run["optimizer"] != optimizer:
                continue
            style = style_of(run)
            good = [(lr, 100 * v) for _, lr, v in points if v is not None]
            ax.plot(*zip(*good), label=label, markersize=5, linewidth=1.4, **style)
            for i, (multiplier, lr, v) in enumerate(points):
                if v is None:  # joined faintly to its good neighbour: whose run diverged
                    near = [p for p in points[max(i - 1, 0):i + 2] if p[2] is not None]
                    for _, near_lr, near_v in near:
                        ax.plot([near_lr, lr], [100 * near_v, floor], color=style["color"],
                                linestyle=style["linestyle"], linewidth=1, alpha=0.4)
                    ax.plot(lr, floor, "x", color=style["color"], markersize=9)
                if multiplier == chosen:
                    ax.plot(lr, 100 * v, "*", color=style["color"], markersize=17,
                            markeredgecolor="black", zorder=5)
                if multiplier == 1:
                    ax.axvline(lr, color="grey", linestyle=":", linewidth=1)
        ax.set_xscale("log", base=2)
        peaks = sorted({lr for run, _, points, _ in curves if run["optimizer"] == optimizer
                        for _, lr, _ in points})
        ax.set_xticks(peaks, [f"{lr:.4g}" for lr in peaks])  # 0.01875, not 0.0187
        ax.minorticks_off()
        ax.set_xlabel("peak learning rate (log scale)")
        if ax is axes[0][0]:  # the scale is shared
            ax.set_ylabel("validation accuracy (%)")
        ax.set_ylim(bottom, ceiling)  # both ends: the axes share one scale
        ax.set_title(f"{LEVELS['optimizer'][optimizer].described}: star = chosen, "
                     "dotted = the recipe's peak", fontsize=11)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8.5, loc="best")
    fig.suptitle(f"Learning-rate sensitivity on validation (a cross: the run diverged; "
                 f"'little tuning' = a wide range within {100 * band:.1f} pp of the best)",
                 fontsize=12)
    return save_figure(fig, path)


@drawn_only_when_changed
def plot_dying_units(curves, path, probe_images):
    """Share of units never positive per epoch, one panel per activation layer, one line per
    activation and optimizer (colour = optimizer, marker = activation, as in the training
    curves): the mean over runs as a line, their range shaded.

    curves: {(activation, optimizer[, suffix]): {layer: (mean per epoch, min, max)}} (shares
    in [0, 1]; a suffix, the levels of a factor beyond the three, draws dashed);
    probe_images: how many validation images the shares were measured on.
    """
    layers = list(next(iter(curves.values())))
    fig, axes = plt.subplots(1, len(layers), figsize=(3.3 * len(layers), 3.9),
                             layout="constrained", sharey=True, squeeze=False)
    top = max(100 * c[2].max() for by_layer in curves.values() for c in by_layer.values())
    for ax, layer in zip(axes[0], layers):
        for (activation, optimizer, *extra), by_layer in curves.items():
            mean, low, high = (100 * np.asarray(a) for a in by_layer[layer])
            epochs = np.arange(1, len(mean) + 1)
            color = OPTIMIZER_COLOR[optimizer]
            ax.plot(epochs, mean, marker=ACTIVATION_MARKER[activation], markersize=4,
                    color=color, linewidth=1.4, linestyle="--" if extra else "-",
                    markerfacecolor=color if level_order("activation", activation) == 0 else "white",
                    label=" · ".join([LEVEL_NAME[activation], LEVEL_NAME[optimizer],
                                      *(e.replace("_", " · ") for e in extra)]))
            ax.fill_between(epochs, low, high, color=color, alpha=0.12, linewidth=0)
        ax.set_title(f"after {layer.replace('_act', '').replace('act', 'conv')}", fontsize=11)
        ax.set_xlabel("epoch")
        last = max(len(c[0]) for by_layer in curves.values() for c in by_layer.values())
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True, min_n_ticks=1))
        ax.set_xlim(0.5, last + 0.5)
        ax.set_ylim(-0.5, max(5.0, 1.15 * top))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("units never positive (%)")
    if len(curves) > 4:  # a fourth factor's lines: the legend below the panels, not over one
        fig.legend(*axes[0][0].get_legend_handles_labels(), loc="outside lower center",
                   ncol=min(4, len(curves)), fontsize=9)
    else:
        axes[0][0].legend(fontsize=9)
    fig.suptitle("Dying units: share of channels (conv) or neurons (dense) never positive on "
                 f"{probe_images:,} validation images (line: mean over runs, band: their range)",
                 fontsize=11)
    return save_figure(fig, path)


@drawn_only_when_changed
def plot_frontier(curves, path, chosen=None, tolerance=0.002):
    """Accuracy against the epoch budget: validation (left) and training images in inference
    mode (right), one line per variant through the seed means, each seed a point; the
    chosen budget a dotted vertical line.

    curves: list of (run-like dict with the factors, label, [(epochs, val accuracy,
    train accuracy in inference mode)] with one entry per finished run).
    """
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), layout="constrained")
    for ax, column, what in ((axes[0], 1, "validation"), (axes[1], 2, "training images, inference mode")):
        for run, label, points in curves:
            style = style_of(run)
            budgets = sorted({p[0] for p in points})
            values = [[p[column] for p in points if p[0] == b and np.isfinite(p[column])]
                      for b in budgets]  # older runs did not record training accuracy
            means = [100 * np.mean(v) if v else np.nan for v in values]
            ax.plot(budgets, means, label=f"{label} (mean)", linewidth=1.6, markersize=0,
                    color=style["color"], linestyle=style["linestyle"])
            ax.plot([p[0] for p in points], [100 * p[column] for p in points], style["marker"],
                    color=style["color"], alpha=0.6, markersize=6, label=f"{label} (seeds)")
        if chosen:
            ax.axvline(chosen, color="grey", linestyle=":", linewidth=1.2)
        budgets = sorted({p[0] for *_, points in curves for p in points})
        ax.set_xticks(budgets)
        ax.set_xlabel("epochs (each budget its own run, schedule fitted to it)")
        ax.set_ylabel(f"accuracy on {what} (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8.5, loc="lower right")
    axes[0].set_title("validation accuracy of the best epoch", fontsize=11)
    axes[1].set_title("training accuracy (no dropout, no augmentation)", fontsize=11)
    fig.suptitle("How long to train: accuracy against the epoch budget"
                 + (f" (dotted: {chosen} epochs, the shortest within {100 * tolerance:.1f} pp "
                    "of the best validation mean)" if chosen else ""), fontsize=12)
    return save_figure(fig, path)
