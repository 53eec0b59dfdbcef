"""The learning rate as a grid axis, and the protocol that tunes it fairly per variant.

A run's lr_multiplier scales its optimizer's peak learning rate (the recipe's peak, so 1 is
the recipe as it stands). Comparing optimizers at one shared setting measures the tuning,
not the optimizer (Wilson et al. 2017; Choi et al. 2019; Schmidt et al. 2021): each variant
gets the same rule -- a log2 grid of multipliers around the recipe's peak, on one seed,
extended by one doubling on each side while that side's end is still within TUNING_BAND of
the best (up to x1/16 and x16), so the best point is inside and the range of good peaks is
bounded on both sides (Wilson et al. 2017 extend while the best is at an edge; the band
rule also measures "needs little tuning") -- and is then compared at its own peak, over
more seeds. The peak is not the sweep's argmax, which picks among near-ties by one seed's
noise: PEAK_RULE reads the curve's shape near its top and never picks a point at the
sweep's edge or next to a diverged run (benchmarks/peak_rule.py simulates the rules). The rule is the same for every variant; the budget follows from it. Choices are
made on validation accuracy only; the test set is not looked at.

Pure functions of the runner's records (name, seed, status, lr_multiplier, val_accuracy):
no Keras, no drawing.
"""

import math

import numpy as np
from scipy import stats

from fmlab.store.run_store import lr_multiplier_of

DEFAULT_SWEEP = (0.5, 1.0, 2.0)  # multipliers of the recipe's peaks: a log2 grid around it
MAX_MULTIPLIER = 16              # the sweep stops at x1/16 and x16 (a stated cap, "≥" beyond)
TUNING_BAND = 0.005              # "needs little tuning": the range within 0.5 pp of the best


def by_variant(runs):
    """{variant name: {multiplier: [runs]}}, in first-seen order."""
    grouped = {}
    for run in runs:
        grouped.setdefault(run["name"], {}).setdefault(lr_multiplier_of(run), []).append(run)
    return grouped


def sweep_seeds(points):
    """The seeds every multiplier of a variant was run with: the sweep's (further seeds at
    the chosen multiplier only must not make it look better than its neighbours)."""
    seeds = [{r["seed"] for r in runs} for runs in points.values()]
    return sorted(set.intersection(*seeds)) if seeds else []


def sweep_curve(points):
    """[(multiplier, mean validation accuracy over the sweep seeds, or None where a run of
    it failed)], by multiplier."""
    seeds = sweep_seeds(points)
    curve = []
    for multiplier in sorted(points):
        runs = [r for r in points[multiplier] if r["seed"] in seeds]
        ok = all(r["status"] == "ok" for r in runs) and runs
        curve.append((multiplier, float(np.mean([r["val_accuracy"] for r in runs])) if ok else None))
    return curve


def argmax_point(curve):
    """The multiplier with the best validation accuracy (ties: the one nearer the recipe's
    peak), or None when every point failed."""
    scored = [(value, -abs(math.log2(m)), m) for m, value in curve if value is not None]
    return max(scored)[2] if scored else None


def eligible(curve):
    """The indices of the points a peak may sit at: finished, inside the sweep (not at either
    end) and with finished neighbours on both sides. A point next to a diverged run or at the
    sweep's edge may be the start of a cliff the sweep did not see."""
    return [i for i in range(1, len(curve) - 1)
            if all(curve[j][1] is not None for j in (i - 1, i, i + 1))]


def _nearest_eligible(curve, log2_target):
    """The eligible point nearest log2_target (ties: the nearer the recipe's peak)."""
    return min(eligible(curve), key=lambda i: (abs(math.log2(curve[i][0]) - log2_target),
                                               abs(math.log2(curve[i][0]))))


def _rule_argmax(curve):
    return max(eligible(curve), key=lambda i: (curve[i][1], -abs(math.log2(curve[i][0]))))


def _rule_smoothed(curve):
    def smoothed(i):
        return (curve[i - 1][1] + 2 * curve[i][1] + curve[i + 1][1]) / 4
    return max(eligible(curve), key=lambda i: (smoothed(i), -abs(math.log2(curve[i][0]))))


def _rule_window_middle(curve, band=TUNING_BAND):
    logs = [(math.log2(m), v) for m, v in curve]
    best = [m for m, _ in curve].index(argmax_point(curve))
    (low, _), (high, _) = band_edges(logs, best, band)
    return _nearest_eligible(curve, (low + high) / 2)


def _rule_quadratic(curve, reach=2):
    """The vertex of a parabola in log2(multiplier) fitted to the finished points within
    `reach` doublings of the best one; the best point itself where the fit is not concave."""
    best = math.log2(argmax_point(curve))
    near = [(math.log2(m), v) for m, v in curve if v is not None and abs(math.log2(m) - best) <= reach]
    target = best
    if len(near) >= 3:
        a, b, _ = np.polyfit(*np.array(near).T, 2)
        if a < 0:
            x = [x for x, _ in near]
            target = float(np.clip(-b / (2 * a), min(x), max(x)))
    return _nearest_eligible(curve, target)


# How a sweep's curve becomes one peak. Each rule picks among the eligible points only; a
# sweep with none (too short, or failures on every side) falls back to its best point.
# benchmarks/peak_rule.py simulates each on the committed sweeps (docs/training.md).
PEAK_RULES = {"argmax": _rule_argmax, "smoothed": _rule_smoothed,
              "window-middle": _rule_window_middle, "quadratic": _rule_quadratic}
PEAK_RULE = "quadratic"  # the simulation's best hit rate (docs/training.md)
PEAK_RULE_WORDS = {  # how the report names each rule
    "argmax": "the eligible point with the best validation accuracy",
    "smoothed": "the eligible point with the best (1, 2, 1)-smoothed validation accuracy",
    "window-middle": "the eligible point nearest the middle (in log2) of the range within "
                     f"{100 * TUNING_BAND:g} pp of the best",
    "quadratic": "the eligible point nearest the top of a parabola in log2(multiplier) fitted "
                 "to the points within two doublings of the best one",
}


def best_point(curve, rule=PEAK_RULE):
    """The chosen multiplier of a sweep curve [(multiplier, validation accuracy or None)],
    sorted by multiplier, under a peak rule (PEAK_RULES): by default the eligible point
    nearest the vertex of a parabola fitted within two doublings of the best point. None
    when every point failed."""
    if argmax_point(curve) is None:
        return None
    if not eligible(curve):
        return argmax_point(curve)
    return curve[PEAK_RULES[rule](curve)][0]


def chosen_multipliers(runs):
    """{variant name: its peak on the sweep, by the peak rule}."""
    chosen = {}
    for name, points in by_variant(runs).items():
        best = best_point(sweep_curve(points))
        if best is not None:
            chosen[name] = best
    return chosen


def winners_curse(runs):
    """The optimism of choosing on the sweep: at each variant's chosen multiplier, the sweep
    seeds' mean accuracy (on validation the best of several noisy points) against the other
    seeds run there, on validation and on test. {"variants", "sweep_seeds", "other_seeds",
    metric: {"sweep", "others" (means over variants), "ahead" (variants whose sweep seeds
    lead)}, "split"}; None until some variant has other seeds at its chosen point.
    split separates the gap's two causes: the sweep seeds' validation-minus-test gap at their
    unchosen points (no selection there, only their split) against the other seeds' at the
    chosen points ({"sweep_unchosen", "others", "variants"}, or None without unchosen points).
    Their difference is what the split explains; the rest of the validation gap, selection."""
    chosen = chosen_multipliers(runs)
    metrics = ("val_accuracy", "test_accuracy")
    pairs, sweep_used, others_used = {m: [] for m in metrics}, set(), set()
    split = []  # (validation minus test) at the sweep seeds' unchosen points, at the others'

    def val_minus_test(group):
        return float(np.mean([r["val_accuracy"] - r["test_accuracy"] for r in group]))
    for name, points in by_variant(runs).items():
        if name not in chosen:
            continue
        swept = set(sweep_seeds(points))
        at = [r for r in points[chosen[name]] if r["status"] == "ok"]
        first = [r for r in at if r["seed"] in swept]
        others = [r for r in at if r["seed"] not in swept]
        if not first or not others:
            continue
        sweep_used.update(r["seed"] for r in first)
        others_used.update(r["seed"] for r in others)
        for metric in metrics:
            pairs[metric].append((np.mean([r[metric] for r in first]),
                                  np.mean([r[metric] for r in others])))
        unchosen = [r for m, group in points.items() if m != chosen[name] for r in group
                    if r["seed"] in swept and r["status"] == "ok"]
        if unchosen:
            split.append((val_minus_test(unchosen), val_minus_test(others)))
    if not pairs["val_accuracy"]:
        return None
    result = {"variants": len(pairs["val_accuracy"]), "sweep_seeds": sorted(sweep_used),
              "other_seeds": sorted(others_used), "split": None}
    if split:  # the sweep seeds' own split: how far their validation runs above test anyway
        unchosen, others = np.array(split).T
        result["split"] = {"sweep_unchosen": float(unchosen.mean()), "others": float(others.mean()),
                           "variants": len(split)}
    for metric, values in pairs.items():
        first, others = np.array(values).T
        result[metric] = {"sweep": float(first.mean()), "others": float(others.mean()),
                          "ahead": int((first > others).sum())}
    return result


def off_peak_seeds(runs, confidence=0.95, measure="val_accuracy"):
    """Further seeds (beyond the sweep's) run at a point other than the variant's chosen
    peak as well as at the peak: an out-of-sample check of the choice, since the sweep seeds
    chose it and these did not. {"points": [{"name", "chosen", "other", "seeds",
    "at_chosen", "at_other"}] (mean `measure`, validation accuracy unless told, of the seeds
    finished at both points), "difference" (mean over points of at_chosen - at_other), "low", "high" (its
    t interval over the points; None with one point), "ahead" (points where the chosen
    peak leads)}; None without such seeds."""
    chosen, result = chosen_multipliers(runs), []
    for name, points in by_variant(runs).items():
        if name not in chosen:
            continue
        swept = set(sweep_seeds(points))

        def fresh(multiplier):
            return {r["seed"]: r[measure] for r in points[multiplier]
                    if r["status"] == "ok" and r["seed"] not in swept}
        at_chosen = fresh(chosen[name])
        for multiplier in sorted(set(points) - {chosen[name]}):
            at_other = fresh(multiplier)
            seeds = sorted(set(at_chosen) & set(at_other))
            if seeds:
                result.append({"name": name, "chosen": chosen[name], "other": multiplier,
                               "seeds": seeds,
                               "at_chosen": float(np.mean([at_chosen[s] for s in seeds])),
                               "at_other": float(np.mean([at_other[s] for s in seeds]))})
    if not result:
        return None
    gaps = np.array([p["at_chosen"] - p["at_other"] for p in result])
    low = high = None
    if len(gaps) > 1:
        half = stats.t.ppf((1 + confidence) / 2, len(gaps) - 1) * gaps.std(ddof=1) / np.sqrt(len(gaps))
        low, high = float(gaps.mean() - half), float(gaps.mean() + half)
    return {"points": result, "difference": float(gaps.mean()), "low": low, "high": high,
            "ahead": int((gaps > 0).sum())}


def failed_at_chosen(runs):
    """The runs that failed (diverged) at their variant's chosen multiplier: seeds beyond
    the sweep's, which the comparisons then lack. A peak chosen next to a diverged point
    carries that risk, so the report names them instead of dropping them silently."""
    chosen = chosen_multipliers(runs)
    return [r for r in runs if r["status"] != "ok" and r["name"] in chosen
            and lr_multiplier_of(r) == chosen[r["name"]]]


def is_sweep(runs):
    """Whether the runs span more than one multiplier for some variant."""
    return any(len(points) > 1 for points in by_variant(runs).values())


def tuned_runs(runs):
    """The runs at each variant's chosen multiplier: what the comparison of variants uses.
    A variant whose every point failed keeps its failed runs (so the report says so)."""
    chosen = chosen_multipliers(runs)
    return [r for r in runs if chosen.get(r["name"], lr_multiplier_of(r)) == lr_multiplier_of(r)]


def sweep_plan(variants, seed, scales, runs, band=TUNING_BAND, cap=MAX_MULTIPLIER, wide=None):
    """The sweep's (variant, seed, multiplier) runs given those finished so far: every
    variant at every multiplier of `scales`; once all of a variant's points have finished,
    one more point beyond each end whose validation accuracy is still within `band` of the
    variant's best (the grid's step: x2 for a log2 grid), never past x1/cap or x cap, nor
    past a run that diverged. wide: the names of the variants that grow so (None: all); the
    others keep `scales`. Called again as runs finish, until the plan stops growing."""
    plan = []
    for variant in variants:
        points = sorted(scales)
        done = {lr_multiplier_of(r): r for r in runs if r["name"] == variant.name and r["seed"] == seed}
        grows = wide is None or variant.name in wide
        while grows and len(points) >= 2 and all(p in done for p in points):
            value = {p: done[p]["val_accuracy"] if done[p]["status"] == "ok" else None for p in points}
            if argmax_point(list(value.items())) is None:
                break
            best = max(v for v in value.values() if v is not None)
            low = points[0] * points[0] / points[1]
            high = points[-1] * points[-1] / points[-2]
            grow = [(end, new) for end, new in ((points[0], low), (points[-1], high))
                    if value[end] is not None and value[end] >= best - band
                    and 1 / cap - 1e-9 <= new <= cap + 1e-9]
            if not grow:
                break
            points = sorted(points + [new for _, new in grow])
        plan += [(variant, seed, p) for p in points]
    return plan


def band_edges(curve, best_index, band):
    """Where the curve (log2 multiplier, accuracy or None) leaves [best - band, best] on each
    side of its best point, linearly interpolated between sweep points; an edge is censored
    (True) where the curve is still inside the band at the sweep's end or at the last point
    before a failed (diverged) run: the band goes on for an unknown part of that step."""
    threshold = curve[best_index][1] - band
    edges = []
    for step in (-1, 1):
        i = best_index
        while 0 <= i + step < len(curve) and (curve[i + step][1] or 0.0) >= threshold:
            i += step
        if not 0 <= i + step < len(curve):
            edges.append((curve[i][0], True))
            continue
        (x_in, y_in), (x_out, y_out) = curve[i], curve[i + step]
        if y_out is None:  # a failed run: the band reaches at least the last good point,
            edges.append((x_in, True))  # and may go on up to the failure: a lower bound
        else:
            edges.append((x_in + (y_in - threshold) / (y_in - y_out) * (x_out - x_in), False))
    return edges


def sensitivity(runs, band=TUNING_BAND, wide=None):
    """Per variant: its sweep (multiplier, peak learning rate, validation accuracy or None),
    the chosen multiplier, the accuracy lost at the recipe's shared peak (multiplier 1)
    against the chosen one, the width of the learning-rate range within `band` of the best,
    in doublings (log2 units; width_censored where the sweep ends inside the band), and
    whether the sweep rule grew it (wide: the names swept wide, None for all)."""
    result = []
    for name, points in by_variant(runs).items():
        curve = sweep_curve(points)
        chosen = best_point(curve)
        peaks = {m: group[0].get("peak_lr") for m, group in points.items()}
        entry = {"name": name, "points": [(m, peaks[m], v) for m, v in curve], "chosen": chosen,
                 "sweep_seeds": sweep_seeds(points), "runs": sum(len(v) for v in points.values()),
                 "chosen_peak_lr": peaks.get(chosen), "best": None, "loss_at_default": None,
                 "width": None, "width_censored": None, "wide": wide is None or name in wide}
        if chosen is not None:
            values = dict(curve)
            entry["best"] = values[chosen]
            if values.get(1.0) is not None:
                entry["loss_at_default"] = values[chosen] - values[1.0]
            logs = [(math.log2(m), v) for m, v in curve]
            top = [m for m, _ in curve].index(argmax_point(curve))  # the band is below the best
            (low, low_open), (high, high_open) = band_edges(logs, top, band)
            entry["width"], entry["width_censored"] = high - low, low_open or high_open
        result.append(entry)
    return result
