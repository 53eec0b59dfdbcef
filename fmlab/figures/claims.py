"""The claims' figures: the forest plot of every tested claim in each context, and the claims
at every level of a factor beyond the design's three (e.g. the training budget), so a
verdict that depends on the level is seen at a glance."""

import textwrap

import matplotlib

matplotlib.use("Agg")  # no screen needed; must come before pyplot
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from fmlab.figures.figure_cache import drawn_only_when_changed, save_figure  # noqa: E402

LEVEL_COLORS = ["#1b9e77", "#7570b3", "#d95f02", "#e7298a"]


@drawn_only_when_changed
def plot_claims(entries, path):
    """A forest plot: one block per tested claim, its effect in each context (95% interval)
    and averaged over them (Bonferroni interval, thick), a zero line and the band of ± the
    smallest effect of interest; each block on its own scale (claims differ in unit).

    entries: claims.claims_table rows with modelled intervals (effect, low, high, family_low,
    family_high, smallest, scale, contexts [{label, effect, low, high}]).
    """
    tested = [e for e in entries if e.get("modelled")]
    fig, axes = plt.subplots(len(tested), 1, figsize=(9, 1.0 + 1.55 * len(tested)),
                             layout="constrained", squeeze=False)
    for ax, e in zip(axes[:, 0], tested):
        s = e["scale"]
        rows = [(c["label"], c["effect"], c["low"], c["high"], False) for c in e["contexts"]]
        rows.append(("average", e["effect"], e["family_low"], e["family_high"], True))
        ys = np.arange(len(rows))[::-1]
        ax.axvspan(-s * e["smallest"], s * e["smallest"], color="#bbbbbb", alpha=0.35,
                   linewidth=0)
        ax.axvline(0, color="#555555", linestyle="--", linewidth=1)
        for y, (label, effect, low, high, average) in zip(ys, rows):
            color = "black" if average else "#1f77b4"
            if np.isfinite(low):
                ax.plot([s * low, s * high], [y, y], color=color, linewidth=3.2 if average else 1.4)
                if average:
                    ax.plot([s * e["low"], s * e["high"]], [y, y], color="#ff7f0e", linewidth=1.4)
            ax.plot(s * effect, y, "D" if average else "o", color=color, markersize=6 if average else 4)
        ax.set_yticks(ys, [r[0] for r in rows], fontsize=8)
        ax.set_title(e["claim"], fontsize=9.5, loc="left", fontweight="bold")
        ax.set_xlabel(textwrap.shorten(e["measure"], 110, placeholder="..."), fontsize=8.5)
        ax.grid(axis="x", alpha=0.3)
        ax.tick_params(axis="x", labelsize=8)
    fig.suptitle("The claims in every context; right of zero is what the claim says\n"
                 "blue: each context's effect, 95% interval; black: the average, Bonferroni "
                 "interval (orange: its 95%); grey: ± the smallest effect of interest",
                 fontsize=9.5)
    return save_figure(fig, path)


def tested_at_every_level(tables):
    """The claims the model tests at every level of {level: claims_table} (in the claims'
    order): those a figure of the claims by level can set side by side."""
    rows = list(tables.values())
    return [e["claim"] for e in rows[0] if e.get("modelled") and all(
        any(f["claim"] == e["claim"] and f.get("modelled") for f in other) for other in rows[1:])] if rows else []


def depends_words(entry):
    """How a claim x factor test reads: 'yes (Bonferroni p = 0.018)' or 'not shown (Bonferroni
    p = 1)' ('not shown' rather than 'no': the interval says how large a dependence is left
    open). The Bonferroni p (m x p, at most 1) is below 5% exactly where the Bonferroni
    interval excludes zero, the rule that says 'yes'."""
    if not np.isfinite(entry["p"]):
        return "no test (no residual df)"
    adjusted = min(1.0, entry["p"] * entry["family_size"])
    return f"{'yes' if entry['depends'] else 'not shown'} (Bonferroni p = {adjusted:.2g})"


@drawn_only_when_changed
def plot_claims_by_level(by_level, display, path, factor, interactions=()):
    """by_level: {level: claims.claims_table rows}; display: {level: its label}. One panel per
    claim tested at every level: a row per level with its effect (marker), 95% interval (thin)
    and Bonferroni interval (thick), zero (dashed) and ± the smallest effect of interest (grey).
    interactions: claims_by_factor's claim x factor entries, named in each panel's title."""
    levels = list(by_level)
    claims = tested_at_every_level(by_level)
    if not claims:
        raise ValueError("no claim is tested at every level: nothing to draw")
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
        tests = [e for e in interactions if e["claim"] == claim]
        if tests:
            words = "; ".join(depends_words(e)
                              + (f" at {display.get(e['level'], e['level'])}" if len(tests) > 1 else "")
                              for e in tests)
            ax.set_title(f"depends on {factor}: {words}", fontsize=8.5, loc="right",
                         color="#b2182b" if any(e["depends"] for e in tests) else "#555555")
        ax.set_xlabel(textwrap.shorten(rows[0]["measure"], 110, placeholder="..."), fontsize=8.5)
        ax.grid(axis="x", alpha=0.3)
        ax.tick_params(axis="x", labelsize=8)
    fig.suptitle(f"The claims at each level of {factor}; right of zero is what the claim says\n"
                 "thick: Bonferroni interval over the claims at that level; thin: 95%; "
                 "grey: ± the smallest effect of interest", fontsize=9.5)
    return save_figure(fig, path)
