"""What the runs support: per-variant statistics over seeds, factor effects with intervals.

The grid is a factorial design repeated over seeds. Factor effects and interactions are
contrasts of one model, the replicated factorial with seeds as blocks (factorial.py), the
same model the claims are read with; per-variant means get t intervals over their seeds.

Pure numpy/scipy on the runner's result rows (dicts with activation, downsampling,
optimizer, seed, status and metrics); no Keras, no drawing.
"""

import numpy as np
from scipy import stats

from fmlab.stats import factorial
from fmlab.stats.factorial import CONFIDENCE, ok_rows  # noqa: F401  (the report and figures take them from here too)
from fmlab.core.levels import ordered

SUMMARY_METRICS = ("test_accuracy", "val_accuracy", "test_loss", "train_seconds")
CONVERGENCE_THRESHOLDS = (0.90, 0.92)  # validation accuracy a run must reach


def mean_interval(values, confidence=CONFIDENCE):
    """(mean, sample sd, low, high) of a t interval for the mean; sd and the interval are
    NaN for fewer than two values."""
    values = np.asarray(values, dtype=float)
    mean = float(values.mean()) if len(values) else float("nan")
    if len(values) < 2:
        return mean, float("nan"), float("nan"), float("nan")
    sd = float(values.std(ddof=1))
    half = t_half_width(sd, len(values), confidence)
    return mean, sd, mean - half, mean + half


def metric_range(metric):
    """What a metric can be: accuracies, consistency and ECE are shares in [0, 1], losses and
    seconds are at least 0. A t interval does not know it (two seeds of an ECE can give a
    negative lower end), so per-variant intervals are clipped to this range."""
    if "accuracy" in metric or metric in ("shift_consistency", "ece"):
        return 0.0, 1.0
    return 0.0, float("inf")


def t_half_width(sd, n, confidence):
    """Half-width of the t interval for a mean of n values with sample sd."""
    return stats.t.ppf(0.5 + confidence / 2, n - 1) * sd / np.sqrt(n)


def excludes_zero(low, high):
    return bool(np.isfinite(low) and (low > 0 or high < 0))


def variant_summary(rows, factors, metrics=SUMMARY_METRICS):
    """Per variant (in first-seen order): n seeds and mean, sd, CI of each metric."""
    groups = {}
    for r in ok_rows(rows):
        groups.setdefault(r["name"], []).append(r)
    summary = []
    for name, runs in groups.items():
        entry = {"name": name, **{f: runs[0][f] for f in factors}, "n": len(runs),
                 "seeds": sorted(r["seed"] for r in runs)}
        for metric in metrics:
            mean, sd, low, high = mean_interval([r[metric] for r in runs])
            if np.isfinite(sd):  # NaN (one seed) stays NaN
                low, high = np.clip([low, high], *metric_range(metric)).tolist()
            entry[metric] = {"mean": mean, "sd": sd, "low": low, "high": high}
        summary.append(entry)
    return sorted(summary, key=lambda e: -e["test_accuracy"]["mean"])


def ordered_factors(rows, factors):
    """{factor: its levels in the runs, registry order (reference first)} for the model."""
    present = {f: {r[f] for r in ok_rows(rows)} for f in factors}
    return {f: ordered(f, levels) for f, levels in present.items() if levels}


def _with_significance(entry):
    return {**entry, "significant": excludes_zero(entry["low"], entry["high"])}


def effects_and_interactions(rows, factors, metric="test_accuracy"):
    """(main effects, interactions) of one metric from one fit of the replicated factorial
    model with seed blocks (factorial.py). Main effects: each level against its factor's
    reference level (the registry's first), averaged over the other factors, one row per
    non-reference level ("GELU vs ReLU"); interactions: how a level's effect changes between
    a level of another factor and that factor's reference (zero when effects add up).
    Intervals on the model's residual df."""
    design = factorial.fit(rows, ordered_factors(rows, factors), metric)
    return ([_with_significance(e) for e in factorial.main_effects(design)],
            [_with_significance(e) for e in factorial.interactions(design)])


def factor_effects(rows, factors, metric="test_accuracy"):
    return effects_and_interactions(rows, factors, metric)[0]


def interactions(rows, factors, metric="test_accuracy"):
    return effects_and_interactions(rows, factors, metric)[1]


def with_family_significance(entries, confidence=CONFIDENCE):
    """The entries with Bonferroni intervals over all of them."""
    return [{**e, "family_significant": excludes_zero(e["family_low"], e["family_high"])}
            for e in factorial.family_adjusted(entries, confidence)]


def comparison_label(effect, display):
    """'GELU vs ReLU', or 'LeakyReLU vs ReLU x SGD vs Adam' for an interaction."""
    head = f"{display[effect['level']]} vs {display[effect['reference']]}"
    if "by" in effect:
        head += f" x {display[effect['by_level']]} vs {display[effect['by_reference']]}"
    return head


def first_epoch_reaching(history, threshold):
    """(epochs, seconds) until validation accuracy first reached threshold, or None."""
    seconds = 0.0
    for epoch, row in enumerate(history, start=1):
        seconds += row.get("seconds", float("nan"))
        if row["val_accuracy"] >= threshold:
            return epoch, seconds
    return None


def convergence_measures(history, thresholds=CONVERGENCE_THRESHOLDS, early_epochs=(1, 2)):
    """A run's convergence as flat metrics: validation accuracy after each early epoch
    (val_accuracy_epoch1, ...) and the first epoch reaching each threshold (epochs_to_90,
    ...; None when it never did)."""
    measures = {f"val_accuracy_epoch{e}": history[e - 1]["val_accuracy"] if len(history) >= e
                else None for e in early_epochs}
    for threshold in thresholds:
        reached = first_epoch_reaching(history, threshold)
        measures[f"epochs_to_{round(100 * threshold)}"] = reached[0] if reached else None
    return measures


def convergence(runs, thresholds=CONVERGENCE_THRESHOLDS):
    """Per variant and threshold: how many seeds reached it, and the mean epochs and seconds
    those took. runs: records with name and history (per-epoch rows)."""
    table = {}
    for run in ok_rows(runs):
        entry = table.setdefault(run["name"], {"name": run["name"], "n": 0})
        entry["n"] += 1
        for threshold in thresholds:
            reached = first_epoch_reaching(run.get("history", []), threshold)
            entry.setdefault(threshold, []).append(reached)
    result = []
    for entry in table.values():
        row = {"name": entry["name"], "n": entry["n"]}
        for threshold in thresholds:
            reached = [r for r in entry[threshold] if r is not None]
            row[threshold] = {"reached": len(reached),
                              "epochs": float(np.mean([e for e, _ in reached])) if reached else None,
                              "seconds": float(np.mean([s for _, s in reached])) if reached else None}
        result.append(row)
    return result


def effect_sentence(effect, display):
    """'LeakyReLU vs ReLU: +0.12 pp [-0.05, +0.29], not significant at 95% (model df 14)'."""
    head = comparison_label(effect, display) + (" (interaction)" if "by" in effect else "")
    if not np.isfinite(effect["low"]):
        return f"{head}: {100 * effect['effect']:+.2f} pp (one seed: no interval)"
    verdict = "significant" if effect["significant"] else "not significant"
    family = ""
    if effect["significant"] and "family_size" in effect:
        family = (f"; {'holds' if effect['family_significant'] else 'not'} after Bonferroni "
                  f"over {effect['family_size']} comparisons")
    return (f"{head}: {100 * effect['effect']:+.2f} pp [{100 * effect['low']:+.2f}, "
            f"{100 * effect['high']:+.2f}], {verdict} at {CONFIDENCE:.0%} (model df "
            f"{effect['df']:.0f}){family}")
