"""What the runs support: per-variant statistics over seeds, factor effects with intervals.

The grid is a 2x2x2 factorial design repeated over seeds. A factor's main effect is the
difference in test accuracy between its two levels, paired: every (other two factors, seed)
cell gives one difference, so seed-to-seed noise shared by both levels cancels. The 95%
interval is a paired t interval over those differences (4 per seed for a main effect):
mean +- t(0.975, n-1) * sd / sqrt(n). It treats the differences as independent draws, and
any interaction with the other factors widens it -- so it is, if anything, conservative
about "the effect averaged over this grid". An interaction of two factors is the change in
one factor's effect between the two levels of the other, paired the same way over the
third factor and the seeds.

Pure numpy/scipy on the runner's result rows (dicts with activation, downsampling,
optimizer, seed, status and metrics); no Keras, no drawing.
"""

import itertools

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
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


def ok_rows(rows):
    return [r for r in rows if r.get("status") == "ok"]


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


def cell_values(rows, factors, metric):
    """{(level of each factor..., seed): metric} of the finished runs that have it (a level
    never reached, or a run from before the metric, has None)."""
    return {(*(r[f] for f in factors), r["seed"]): r[metric] for r in ok_rows(rows)
            if r.get(metric) is not None}


def _interval_entry(differences, **fields):
    mean, sd, low, high = mean_interval(differences)
    return {**fields, "effect": mean, "sd": sd, "low": low, "high": high, "n": len(differences),
            "significant": excludes_zero(low, high)}


def factor_effects(rows, factors, metric="test_accuracy"):
    """Main effect of each factor: metric(second level) - metric(first level), paired over
    the other factors' levels and the seeds. factors: {factor: (first level, second level)}."""
    names = list(factors)
    cells = cell_values(rows, names, metric)
    seeds = sorted({key[-1] for key in cells})
    effects = []
    for i, factor in enumerate(names):
        first, second = factors[factor]
        others = [factors[f] for f in names if f != factor]
        differences = []
        for levels in itertools.product(*others, seeds):
            key_first = (*levels[:i], first, *levels[i:])
            key_second = (*levels[:i], second, *levels[i:])
            if key_first in cells and key_second in cells:
                differences.append(cells[key_second] - cells[key_first])
        if differences:
            effects.append(_interval_entry(differences, factor=factor, first=first, second=second))
    return effects


def interactions(rows, factors, metric="test_accuracy"):
    """For each pair of factors (A, B): A's effect at B's second level minus A's effect at
    B's first level, paired over the remaining factor's levels and the seeds."""
    names = list(factors)
    cells = cell_values(rows, names, metric)
    seeds = sorted({key[-1] for key in cells})
    found = []
    for a, b in itertools.combinations(names, 2):
        rest = [f for f in names if f not in (a, b)]
        differences = []
        for levels in itertools.product(*(factors[f] for f in rest), seeds):
            fixed = dict(zip(rest, levels[:-1]))

            def value(level_a, level_b):
                key = tuple({a: level_a, b: level_b, **fixed}[f] for f in names) + (levels[-1],)
                return cells.get(key)

            corners = [value(la, lb) for lb in factors[b] for la in factors[a]]
            if None not in corners:
                a_at_b1, a_at_b2 = corners[1] - corners[0], corners[3] - corners[2]
                differences.append(a_at_b2 - a_at_b1)
        if differences:
            found.append(_interval_entry(differences, factor=a, by=b))
    return found


def family_adjusted(entries, confidence=CONFIDENCE):
    """The entries (effects and interactions reported together) with Bonferroni-widened
    intervals added: each at 1 - (1 - confidence) / m for m entries, so that all m intervals
    hold at once with probability >= confidence. Six comparisons at 95% each would give
    about a one-in-four chance that at least one zero effect looks "significant"."""
    m = len(entries)
    each = 1 - (1 - confidence) / max(m, 1)
    adjusted = []
    for e in entries:  # one pair has sd NaN, so its interval stays NaN
        half = t_half_width(e["sd"], e["n"], each) if e["n"] > 1 else float("nan")
        low, high = e["effect"] - half, e["effect"] + half
        adjusted.append({**e, "family_size": m, "family_low": low, "family_high": high,
                         "family_significant": excludes_zero(low, high)})
    return adjusted


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
    """'LeakyReLU vs ReLU: +0.12 pp [-0.05, +0.29], not significant at 95% (n=12 pairs)'."""
    if "by" in effect:
        head = f"{effect['factor']} x {effect['by']}"
    else:
        head = f"{display[effect['second']]} vs {display[effect['first']]}"
    if not np.isfinite(effect["low"]):
        return f"{head}: {100 * effect['effect']:+.2f} pp (one pair: no interval)"
    verdict = "significant" if effect["significant"] else "not significant"
    family = ""
    if effect["significant"] and "family_size" in effect:
        family = (f"; {'holds' if effect['family_significant'] else 'not'} after Bonferroni "
                  f"over {effect['family_size']} comparisons")
    return (f"{head}: {100 * effect['effect']:+.2f} pp [{100 * effect['low']:+.2f}, "
            f"{100 * effect['high']:+.2f}], {verdict} at {CONFIDENCE:.0%} (n={effect['n']} pairs)"
            f"{family}")
