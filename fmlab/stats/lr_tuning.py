"""The learning rate as a grid axis, and the protocol that tunes it fairly per variant.

A run's lr_multiplier scales its optimizer's peak learning rate (the recipe's peak, so 1 is
the recipe as it stands). Comparing optimizers at one shared setting measures the tuning,
not the optimizer (Wilson et al. 2017; Choi et al. 2019; Schmidt et al. 2021): each variant
gets the same rule -- a log2 grid of multipliers around the recipe's peak, on one seed,
extended by one doubling on each side while that side's end is still within TUNING_BAND of
the best (up to x1/16 and x16), so the best point is inside and the range of good peaks is
bounded on both sides (Wilson et al. 2017 extend while the best is at an edge; the band
rule also measures "needs little tuning") -- and is then compared at its own best point,
over more seeds. The rule is the same for every variant; the budget follows from it. Choices are
made on validation accuracy only; the test set is not looked at.

Pure functions of the runner's records (name, seed, status, lr_multiplier, val_accuracy):
no Keras, no drawing.
"""

import math

import numpy as np

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


def best_point(curve):
    """The multiplier with the best validation accuracy (ties: the one nearer the recipe's
    peak), or None when every point failed."""
    scored = [(value, -abs(math.log2(m)), m) for m, value in curve if value is not None]
    return max(scored)[2] if scored else None


def chosen_multipliers(runs):
    """{variant name: its multiplier with the best validation accuracy on the sweep}."""
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
    lead)}}; None until some variant has other seeds at its chosen point."""
    chosen = chosen_multipliers(runs)
    metrics = ("val_accuracy", "test_accuracy")
    pairs, sweep_used, others_used = {m: [] for m in metrics}, set(), set()
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
    if not pairs["val_accuracy"]:
        return None
    result = {"variants": len(pairs["val_accuracy"]), "sweep_seeds": sorted(sweep_used),
              "other_seeds": sorted(others_used)}
    for metric, values in pairs.items():
        first, others = np.array(values).T
        result[metric] = {"sweep": float(first.mean()), "others": float(others.mean()),
                          "ahead": int((first > others).sum())}
    return result


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
            if best_point(list(value.items())) is None:
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
    (True) where the curve is still inside the band at the sweep's end."""
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
        if y_out is None:  # a failed run: the band ends at the last good point
            edges.append((x_in, False))
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
            (low, low_open), (high, high_open) = band_edges(logs, [m for m, _ in curve].index(chosen), band)
            entry["width"], entry["width_censored"] = high - low, low_open or high_open
        result.append(entry)
    return result
