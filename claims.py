"""The classic claims about the three design choices, each tested against the runs.

Each claim gets one measure and one paired effect, signed so that a positive value is what
the claim says (e.g. ReLU minus LeakyReLU for "ReLU converges faster"), with its 95% t
interval and a Bonferroni interval over every claim tested at once (factor_analysis). The
verdict reads the Bonferroni interval: supported where it lies above zero, contradicted
where it lies below, and otherwise not detectable at this sample size -- with the smallest
effect the design would detect (two-sided, family-wise 5%, 80% power, at the observed
spread). Claims about the optimizers are judged at each variant's tuned peak (the runs
given here); "needs little tuning" uses the learning-rate sweep (lr_tuning.sensitivity).

Pure functions of the runner's records: no Keras, no drawing.
"""

import numpy as np
from scipy import stats

import factor_analysis as fa

POWER = 0.8
# claim, what is measured, the metric, factor, level the claim favours, the other level;
# sign +1: higher is what the claim says, -1: lower is
CLAIMS = [
    ("1. ReLU converges faster in the early epochs",
     "validation accuracy after epoch 1 (pp)", "val_accuracy_epoch1",
     "activation", "relu", "leakyrelu", +1),
    ("2. ReLU suffers from dying units; LeakyReLU prevents them",
     "share of units never positive at the end, after conv1-4 and dense (pp)",
     "never_positive_units", "activation", "relu", "leakyrelu", +1),
    ("3. Max pooling keeps the important features when it downsamples",
     "test accuracy (pp)", "test_accuracy", "downsampling", "maxpool", "strided", +1),
    ("5a. Adam converges faster",
     "validation accuracy after epoch 1, each at its tuned peak (pp)", "val_accuracy_epoch1",
     "optimizer", "adam", "sgd", +1),
    ("5b. Adam needs little tuning",
     "width of the learning-rate range within 0.5 pp of the best (doublings)", "lr_width",
     "optimizer", "adam", "sgd", +1),
    ("6a. SGD with momentum generalises better when tuned",
     "test accuracy, each at its tuned peak (pp)", "test_accuracy",
     "optimizer", "sgd", "adam", +1),
    ("6b. SGD with momentum generalises better when tuned",
     "generalisation gap: train minus test accuracy, inference mode (pp)", "generalization_gap",
     "optimizer", "sgd", "adam", -1),
]
UNSCALED = {"lr_width"}  # in doublings, not a share: shown as is (shares x100, in pp)


def smallest_detectable(sd, n, alpha):
    """The effect a paired two-sided t test at level alpha detects with POWER, at spread sd."""
    if n < 2 or not np.isfinite(sd):
        return float("nan")
    return float((stats.t.ppf(1 - alpha / 2, n - 1) + stats.t.ppf(POWER, n - 1)) * sd / np.sqrt(n))


def width_rows(sensitivity, runs, names):
    """Pseudo-runs (the factors, seed 0, lr_width) of the sweep: one per variant, so the
    width compares like any metric, paired over the other two factors."""
    factors = {r["name"]: {f: r[f] for f in names} for r in runs}
    return [{**factors[e["name"]], "name": e["name"], "seed": 0, "status": "ok",
             "lr_width": e["width"], "lr_width_censored": bool(e["width_censored"])}
            for e in sensitivity if e["width"] is not None and e["name"] in factors]


def verdict(low, high, detectable):
    if np.isfinite(low) and low > 0:
        return "supported"
    if np.isfinite(high) and high < 0:
        return "contradicted"
    if np.isfinite(detectable):
        return f"not detectable at this sample size (smallest detectable: {detectable:.2f})"
    return "not detectable at this sample size (too few pairs for an interval)"


def claims_table(runs, factors, sensitivity=None, confidence=fa.CONFIDENCE):
    """One entry per claim: the claim, its measure, the signed effect (positive: as the claim
    says), its interval and Bonferroni interval, pairs, smallest detectable effect, verdict.
    runs: the finished runs at each variant's tuned peak; factors: {factor: its two levels};
    sensitivity: lr_tuning's, or None (then 5b is left out). Claim 4 (parameters) is a
    count, not an estimate: exact."""
    sweep = width_rows(sensitivity or [], runs, list(factors))
    tested = []
    for claim, measure, metric, factor, favoured, other, sign in CLAIMS:
        # factor_effects measures second level minus first: order the levels so that a
        # positive effect is what the claim says
        order = (other, favoured) if sign > 0 else (favoured, other)
        effects = fa.factor_effects(sweep if metric == "lr_width" else runs,
                                    {**factors, factor: order}, metric)
        found = [e for e in effects if e["factor"] == factor]
        if found:
            tested.append({**found[0], "claim": claim, "measure": measure, "metric": metric,
                           "scale": 1 if metric in UNSCALED else 100})
    tested = fa.family_adjusted(tested, confidence)  # Bonferroni over the claims tested
    alpha = (1 - confidence) / max(len(tested), 1)
    for entry in tested:
        detectable = smallest_detectable(entry["sd"], entry["n"], alpha) * entry["scale"]
        entry.update(detectable=detectable,
                     verdict=verdict(entry["family_low"], entry["family_high"], detectable))
        if entry["metric"] == "lr_width":
            entry["verdict"] = censored_width_verdict(entry["verdict"], sweep)
    parameters = parameter_claim(runs)
    # in the claims' own order (their labels start "1.", ..., "6b."), also when some are missing
    return sorted(tested + ([parameters] if parameters else []), key=lambda e: e["claim"])


def censored_width_verdict(text, sweep):
    """A width is a lower bound where the sweep ends inside the band (the accuracy never fell
    0.5 pp below the best on that side): with every width bounded there is nothing to compare."""
    censored = sum(r["lr_width_censored"] for r in sweep)
    if censored == len(sweep):
        return ("not measurable with this sweep: every variant stays within 0.5 pp of its best "
                "up to an end of its sweep, so every width is a lower bound")
    return text + (f" ({censored} of {len(sweep)} widths are lower bounds)" if censored else "")


def parameter_claim(runs):
    """Claim 4: what the strided convolutions add, counted (the same for every seed)."""
    params = {}
    for r in fa.ok_rows(runs):
        params.setdefault(r["downsampling"], set()).add((r["trainable_params"],
                                                         r.get("downsampling_params")))
    if not {"maxpool", "strided"} <= params.keys():
        return None
    strided = min(params["strided"])
    added = strided[0] - min(params["maxpool"])[0]
    share = (f"; the downsampling is {strided[1] / strided[0]:.1%} of the strided model's "
             f"{strided[0]:,} parameters" if strided[1] is not None else "")
    return {"claim": "4. A strided convolution learns the downsampling but adds parameters",
            "measure": "trainable parameters, strided minus max pooling (count)",
            "metric": "trainable_params", "scale": 1, "effect": float(added), "exact": True,
            "verdict": ("supported" if added > 0 else "contradicted") +
                       f" (exact: +{added:,} parameters{share})"}


def dying_curves(runs, layers):
    """{(activation, optimizer): {layer: (mean share per epoch, min, max over runs)}} from the
    runs' histories (never_positive_<layer> columns), ReLU before LeakyReLU, Adam before SGD;
    runs without the columns are left out. Split by optimizer too: how many units die depends
    on the optimizer's step as much as on the activation."""
    groups = {}
    for r in fa.ok_rows(runs):
        if r.get("history") and f"never_positive_{layers[0]}" in r["history"][0]:
            groups.setdefault((r["activation"], r["optimizer"]), []).append(r)
    order = {"relu": 0, "leakyrelu": 1, "adam": 0, "sgd": 1}
    curves = {}
    for key in sorted(groups, key=lambda k: (order.get(k[0], 2), order.get(k[1], 2), k)):
        group = groups[key]
        epochs = min(len(r["history"]) for r in group)
        curves[key] = {}
        for layer in layers:
            shares = np.array([[row[f"never_positive_{layer}"] for row in r["history"][:epochs]]
                               for r in group])
            curves[key][layer] = (shares.mean(axis=0), shares.min(axis=0), shares.max(axis=0))
    return curves
