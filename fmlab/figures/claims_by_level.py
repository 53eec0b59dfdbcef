"""The claims at every level of a factor beyond the design's three (e.g. the training budget):
one panel per tested claim, its average effect at each level with the Bonferroni and 95%
intervals, so a verdict that depends on the level is seen at a glance."""

import textwrap

import matplotlib

matplotlib.use("Agg")  # no screen needed; must come before pyplot
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from fmlab.figures.figure_cache import drawn_only_when_changed, save_figure  # noqa: E402

LEVEL_COLORS = ["#1b9e77", "#7570b3", "#d95f02", "#e7298a"]


@drawn_only_when_changed
def plot_claims_by_level(by_level, display, path, factor):
    """by_level: {level: claims.claims_table rows}; display: {level: its label}. One panel per
    claim tested at every level: a row per level with its effect (marker), 95% interval (thin)
    and Bonferroni interval (thick), zero (dashed) and +- the smallest effect of interest (grey)."""
    levels = list(by_level)
    claims = [e["claim"] for e in by_level[levels[0]] if e.get("modelled")
              and all(any(f["claim"] == e["claim"] and f.get("modelled") for f in by_level[lv])
                      for lv in levels)]
    fig, axes = plt.subplots(len(claims), 1, figsize=(9, 0.9 + (0.45 * len(levels) + 0.75) * len(claims)),
                             layout="constrained", squeeze=False)
    for ax, claim in zip(axes[:, 0], claims):
        rows = [next(e for e in by_level[lv] if e["claim"] == claim) for lv in levels]
        s, smallest = rows[0]["scale"], rows[0]["smallest"]
        ax.axvspan(-s * smallest, s * smallest, color="#bbbbbb", alpha=0.35, linewidth=0)
        ax.axvline(0, color="#555555", linestyle="--", linewidth=1)
        ys = np.arange(len(levels))[::-1]
        for y, e, color in zip(ys, rows, LEVEL_COLORS):
            if np.isfinite(e["family_low"]):
                ax.plot([s * e["family_low"], s * e["family_high"]], [y, y], color=color,
                        linewidth=3.2, alpha=0.55)
                ax.plot([s * e["low"], s * e["high"]], [y, y], color=color, linewidth=1.3)
            ax.plot(s * e["effect"], y, "D", color=color, markersize=6)
        ax.set_yticks(ys, [display.get(lv, lv) for lv in levels], fontsize=8.5)
        ax.set_ylim(-0.7, len(levels) - 0.3)
        ax.set_title(claim, fontsize=9.5, loc="left", fontweight="bold")
        ax.set_xlabel(textwrap.shorten(rows[0]["measure"], 110, placeholder="..."), fontsize=8.5)
        ax.grid(axis="x", alpha=0.3)
        ax.tick_params(axis="x", labelsize=8)
    fig.suptitle(f"The claims at each level of {factor}; right of zero is what the claim says\n"
                 "thick: Bonferroni interval over the claims at that level; thin: 95%; "
                 "grey: +- the smallest effect of interest", fontsize=9.5)
    return save_figure(fig, path)
