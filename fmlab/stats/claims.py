"""The classic claims about the three design choices, each tested against the runs.

Every claim is one contrast of the replicated factorial model (factorial.py: full factorial
of the seed's two levels per choice, seeds as blocks), signed so that a positive value is
what the claim says, with its 95% interval, a Bonferroni interval over every claim tested
together, and its effect in each context (each combination of the other two choices), so
heterogeneity is seen. The verdict vocabulary, defined once (VERDICTS), reads those
intervals against a smallest effect of interest stated per measure. Claims about the
optimizers are judged at each variant's tuned peak (the runs given here); "needs little
tuning" uses the learning-rate sweep's widths (lr_tuning.sensitivity), a censored width as
the lower bound it is.

Pure functions of the runner's records: no Keras, no drawing.
"""

import dataclasses
import re

import numpy as np

from fmlab.stats import factor_analysis, factorial
from fmlab.core.levels import LEAKY_SLOPE, display_name, level_order, name_suffix
from fmlab.stats.lr_tuning import TUNING_BAND

CLAIM_LEVELS = {  # the levels the claims are about; other levels of a grid are left out
    "activation": ("relu", "leakyrelu"),
    "downsampling": ("maxpool", "strided"),
    "optimizer": ("adam", "sgd"),
}
VERDICTS = {
    "supported": "the Bonferroni interval lies above zero (followed by \"but smaller than the "
                 "effect of interest\" where it also lies inside ± the smallest effect of "
                 "interest)",
    "contradicted": "the Bonferroni interval lies below zero (with the same addition)",
    "no practical effect": "the Bonferroni interval lies inside ± the smallest effect of "
                           "interest (an equivalence test, TOST, at the family-wise level)",
    "leans for": "the 95% interval lies above zero, the Bonferroni interval does not",
    "leans against": "the 95% interval lies below zero, the Bonferroni interval does not",
    "inconclusive": f"none of these: the design's detectable effect ({factorial.POWER:.0%} power, from the "
                    "pooled residual spread, before looking at the estimate) and the seeds "
                    "that would detect the smallest effect of interest are given, or, where "
                    "the seeds already suffice, the margin the Bonferroni interval spans",
}


@dataclasses.dataclass(frozen=True)
class Claim:
    label: str        # "3a. Max pooling keeps ..."
    measure: str      # what is measured, with its unit
    metric: str       # the run record's field (or a derived one)
    factor: str
    favoured: str     # the level the claim favours (for "level" claims: the level measured)
    other: str
    sign: int         # +1: higher is what the claim says, -1: lower is
    smallest: float   # smallest effect of interest, in the metric's units
    why: str          # why this measure tests the claim, one line
    scale: float = 100  # shares are shown in percentage points


EARLY = ("Epoch 1 is the linear warm-up from a learning rate of 0 (to peaks that differ per "
         "variant): early speed is read after it, over the first half of training")
CLAIMS = [
    Claim("1. ReLU converges faster in the early epochs",
          "mean validation accuracy over the first half of training after the warm-up (pp)",
          "val_accuracy_early", "activation", "relu", "leakyrelu", +1, 0.005, EARLY),
    Claim("2a. ReLU suffers from dying units",
          "share of ReLU units whose output is zero on every held-out image (pp)",
          "never_positive_units", "activation", "relu", "relu", +1, 0.01,
          "A ReLU unit that outputs zero on every image also gets zero gradient: it is dead "
          "(Lu et al. 2019); counted over every activation layer a run measured"),
    Claim("2c. Dead units cost accuracy",
          "test accuracy, LeakyReLU minus ReLU (pp)", "test_accuracy", "activation",
          "leakyrelu", "relu", +1, 0.002,
          "If dying units mattered, the activation without them would be more accurate"),
    Claim("3a. Max pooling keeps the important features when it downsamples",
          "test accuracy (pp)", "test_accuracy", "downsampling", "maxpool", "strided", +1, 0.002,
          "The designs differ in more than the operator: the strided model has three more "
          "conv + batch norm + activation blocks and more parameters (claim 4)"),
    Claim("3b. Max pooling keeps the important features when it downsamples",
          "shift consistency: same class for two random shifts of an image (pp)",
          "shift_consistency", "downsampling", "maxpool", "strided", +1, 0.005,
          "Pooling is said to buy invariance; both operators alias (Zhang 2019)"),
    Claim("5a. Adam converges faster",
          "mean validation accuracy over the first half of training after the warm-up, each "
          "at its tuned peak (pp)", "val_accuracy_early", "optimizer", "adam", "sgd", +1, 0.005,
          EARLY),
    Claim("5b. Adam needs little tuning",
          f"width of the learning-rate range within {100 * TUNING_BAND:g} pp of the best (doublings)", "lr_width",
          "optimizer", "adam", "sgd", +1, 1.0,
          "A width the sweep did not bound (it stopped at a cap inside the band, or at the last "
          "point before a diverged run) counts at its lower bound, so the effect is then a "
          "bound and only the verdicts on its safe side are given, and censoring on both "
          "optimizers leaves it unmeasured; one seed per variant, so the optimizer's effect is tested against "
          "its variation over the four contexts", scale=1),
    Claim("6a. SGD with momentum generalises better when tuned",
          "test accuracy, each at its tuned peak (pp)", "test_accuracy", "optimizer", "sgd",
          "adam", +1, 0.002, "Both optimizers at the peak tuned for each on validation"),
    Claim("6b. SGD with momentum generalises better when tuned",
          "generalisation gap: train minus test accuracy, inference mode (pp)",
          "generalization_gap", "optimizer", "sgd", "adam", -1, 0.002,
          "Training accuracy re-scored like the test set (no dropout, same averaging)"),
]
NO_VERDICT = ("no verdict: one seed (or a missing variant) leaves no residual to measure the "
              "noise with; run every variant with --seeds 0 1 2")


def early_accuracy(history, warmup_epochs=1):
    """Mean validation accuracy over the epochs after the warm-up up to half the run (at
    least one epoch), or None for a run without a history."""
    if not history:
        return None
    first = int(np.ceil(warmup_epochs))
    last = max(first + 1, len(history) // 2)
    rows = history[first:last] or history[-1:]
    return float(np.mean([r["val_accuracy"] for r in rows]))


def width_rows(sensitivity, runs):
    """Pseudo-runs (the factors, seed 0, lr_width, censored) of the sweep: one per variant
    swept wide, a censored width (the sweep ended inside the band, or at the last point before
    a diverged run) at its lower bound; the variants kept at their starting points are left
    out (their widths would be a haphazard subset of the design)."""
    factors = {r["name"]: {f: r[f] for f in CLAIM_LEVELS} for r in runs}
    return [{**factors[e["name"]], "name": e["name"], "seed": 0, "status": "ok",
             "lr_width": e["width"], "censored": bool(e["width_censored"])}
            for e in sensitivity if e["width"] is not None
            and e.get("wide", True) and e["name"] in factors]


def censoring_bound(claim, rows):
    """What the claim's signed effect is when censored widths count at their lower bounds:
    None (no censoring: an estimate), "lower" or "upper" (a bound), or "neither" (lower
    bounds on both levels: no bound)."""
    censored = {r[claim.factor] for r in rows if r.get("censored")}
    if not censored:
        return None
    if censored >= {claim.favoured, claim.other}:
        return "neither"
    # the favoured level's true widths are larger: its contrast is at least the estimate
    at_least = (claim.favoured in censored) == (claim.sign > 0)
    return "lower" if at_least else "upper"


def with_history_measures(runs):
    """The runs with the measures the claims read from their histories: the early validation
    accuracy (claims 1 and 5a), and the convergence measures for runs recorded before those
    were stored."""
    return [{**factor_analysis.convergence_measures(r.get("history") or []), **r,
             "val_accuracy_early": early_accuracy(r.get("history"),
                                                  r.get("settings", {}).get("warmup_epochs", 1))}
            for r in runs]


def claim_level_runs(runs):
    """The finished runs of the seed's levels only (a grid with GELU or average pooling too
    tests the classic claims on the classic variants). Runs of two levels of a factor beyond
    the three (two names for one cell of the design) would enter the model as repeats of
    that cell: ValueError; claims_by_factor.claims_by_level splits them first."""
    kept = [r for r in factorial.ok_rows(runs)
            if all(r.get(f) in levels for f, levels in CLAIM_LEVELS.items())]
    names = {}
    for r in kept:
        names.setdefault(tuple(r[f] for f in CLAIM_LEVELS), set()).add(r["name"])
    mixed = [sorted(n) for n in names.values() if len(n) > 1]
    if mixed:
        raise ValueError(f"the claims take one level of each factor beyond the design's three; "
                         f"these runs mix levels: {', '.join(mixed[0])}")
    return kept


def seed_plan(rows, family, smallest=0.002, confidence=factorial.CONFIDENCE):
    """How many seeds per variant a main effect of test accuracy of +-smallest needs to be
    detected with 80% power, from the pooled residual spread of the factorial model (before
    looking at any effect): at the 5% level and at the claims' family-wise level (Bonferroni
    over `family` claims). rows: claims_table's; its test-accuracy claims share one model,
    and in the balanced design every main effect has the same standard error. None without
    a residual (one seed, or a missing variant)."""
    entry = next((r for r in rows if r.get("metric") == "test_accuracy" and r.get("modelled")),
                 None)
    if entry is None:
        return None
    alpha, alpha_family = 1 - confidence, (1 - confidence) / max(family, 1)
    return {"sigma": entry["sigma"], "df": entry["df"], "seeds": entry["seeds"],
            "smallest": smallest,
            "detectable": factorial.detectable_effect(entry["se"], entry["df"], alpha_family),
            "needed": factorial.seeds_needed(entry, entry["seeds"], entry["cells"], smallest,
                                             alpha),
            "needed_family": factorial.seeds_needed(entry, entry["seeds"], entry["cells"],
                                                    smallest, alpha_family)}


def context_label(context):
    return ", ".join(display_name(v) for v in context.values())


def estimate_claim(claim, runs, sweep):
    """The claim's signed effect with its intervals and contexts (no family adjustment yet)."""
    # the claim's factor ordered so that level minus reference is favoured minus other
    factors = {f: ((claim.other, claim.favoured) if f == claim.factor else levels)
               for f, levels in CLAIM_LEVELS.items()}
    bound = None
    if claim.metric == "lr_width":
        bound = censoring_bound(claim, sweep)
        if bound == "neither":
            return None
        design = factorial.fit(sweep, factors, claim.metric, additive=claim.factor)
    elif claim.favoured == claim.other:  # a level's own value (2a): the ReLU runs
        del factors[claim.factor]
        design = factorial.fit([r for r in runs if r[claim.factor] == claim.favoured], factors,
                               claim.metric)
    else:
        design = factorial.fit(runs, factors, claim.metric)
    if not design.factors or (claim.favoured != claim.other and claim.factor not in design.factors):
        return None
    if claim.favoured == claim.other:
        average = factorial.grand_mean(design)
        contexts, p = factorial.context_effects(design, None, None, None)
    else:
        average = next(e for e in factorial.main_effects(design) if e["factor"] == claim.factor)
        contexts, p = factorial.context_effects(design, claim.factor, claim.favoured, claim.other)
    cells = int(np.prod([len(v) for v in design.factors.values()]))

    def signed(entry):
        out = dict(entry)
        out["effect"] = claim.sign * entry["effect"]
        if claim.sign < 0:
            out["low"], out["high"] = -entry["high"], -entry["low"]
        return out

    def label(context):  # a context holding a censored width gives a bound, not an estimate
        capped = bound and any(r["censored"] and all(r[f] == v for f, v in context.items())
                               for r in sweep)
        return context_label(context) + (" (a bound)" if capped else "")

    return {**signed(average), "claim": claim.label, "measure": claim.measure,
            "metric": claim.metric, "scale": claim.scale, "smallest": claim.smallest,
            "why": claim.why, "runs": len(design.frame), "seeds": len(design.seeds),
            "bound": bound, "censored": sum(r["censored"] for r in sweep) if bound else 0,
            "cells": cells, "heterogeneity_p": p, "modelled": design.result is not None,
            "contexts": [{**signed(c), "label": label(c["context"])} for c in contexts]}


def verdict(entry, alpha):
    """The verdict of an entry with its family-wise interval (VERDICTS)."""
    if not entry["modelled"]:
        return NO_VERDICT
    low, high, fw_low, fw_high = entry["low"], entry["high"], entry["family_low"], entry["family_high"]
    s, smallest = entry["scale"], entry["smallest"]
    unit = "doublings" if s == 1 else "pp"
    within = f"within ±{s * smallest:g} {unit}"
    small = -smallest < fw_low and fw_high < smallest  # an equivalence test passes
    if fw_low > 0 or fw_high < 0:  # a direction; and whether it is too small to matter
        text = "supported" if fw_low > 0 else "contradicted"
        if small and not entry.get("bound"):  # a bound's true effect may lie beyond it
            text += f", but smaller than the effect of interest ({within})"
    elif small:
        text = f"no practical effect ({within})"
        if low > 0 or high < 0:
            text += f"; leans {'for' if low > 0 else 'against'}"
    elif low > 0:
        text = "leans for"
    elif high < 0:
        text = "leans against"
    else:
        detectable = factorial.detectable_effect(entry["se"], entry["df"], alpha)
        needed = factorial.seeds_needed(entry, entry["seeds"], entry["cells"], smallest, alpha)
        if needed and needed <= entry["seeds"]:  # powered enough: the estimate leaves it open
            margins = " and ".join(f"{s * m:+g}" for m in (-smallest, smallest)
                                   if fw_low <= m <= fw_high)
            seeds = f"the seeds suffice; the Bonferroni interval spans zero and {margins}"
        elif needed:
            seeds = f"~{needed} seeds would detect ±{s * smallest:g}"
        else:
            seeds = f"more than 50 seeds would be needed for ±{s * smallest:g}"
        text = (f"inconclusive (this design detects ±{s * detectable:.2f} {unit} with {factorial.POWER:.0%} "
                f"power; {seeds})")
    if entry.get("bound"):  # censored widths at their lower bounds: one side's verdicts only
        safe = ("supported", "leans for") if entry["bound"] == "lower" else ("contradicted",
                                                                             "leans against")
        n = entry["censored"]
        what = (f"{'a lower' if entry['bound'] == 'lower' else 'an upper'} bound: {n} censored "
                + ("width counted at its lower bound" if n == 1
                   else "widths counted at their lower bounds"))
        if text.startswith(safe):
            text = f"{text} ({what})"
        else:
            detectable = factorial.detectable_effect(entry["se"], entry["df"], alpha)
            text = (f"inconclusive (this design detects ±{s * detectable:.2f} {unit} with {factorial.POWER:.0%} "
                    f"power; {what})")
    if np.isfinite(entry["heterogeneity_p"]) and entry["heterogeneity_p"] < alpha:
        ranked = sorted(entry["contexts"], key=lambda c: c["effect"])
        text += (f"; depends on the context (interaction p = {entry['heterogeneity_p']:.2g}): "
                 f"{s * ranked[0]['effect']:+.2f} with {ranked[0]['label']} to "
                 f"{s * ranked[-1]['effect']:+.2f} with {ranked[-1]['label']}")
    return text


def claims_table(runs, sensitivity=None, confidence=factorial.CONFIDENCE):
    """One entry per claim, in the claims' order: the tested ones with effect, intervals,
    contexts and verdict; 2b and 4 (true by construction, counted) without a test.
    runs: the finished runs at each variant's tuned peak; sensitivity: lr_tuning's, or None
    (then 5b is left out)."""
    runs = claim_level_runs(runs)
    sweep = width_rows(sensitivity or [], runs)
    tested = [e for e in (estimate_claim(c, runs, sweep) for c in CLAIMS
                          if c.metric != "lr_width" or sensitivity) if e]
    if sensitivity and not any(e["metric"] == "lr_width" for e in tested):
        tested.append(unmeasured_width(sensitivity, sweep))
    modelled = [e for e in tested if e.get("modelled")]
    adjusted = factorial.family_adjusted(modelled, confidence)
    alpha = (1 - confidence) / max(len(modelled), 1)
    for entry, wide in zip(modelled, adjusted):
        entry.update(family_low=wide["family_low"], family_high=wide["family_high"],
                     family_size=len(modelled))
    for entry in tested:
        if "verdict" not in entry:
            entry["verdict"] = verdict(entry, alpha)
    extra = [e for e in (leaky_claim(runs), parameter_claim(runs)) if e]
    return sorted(tested + extra, key=lambda e: claim_number(e["claim"]))


def claim_number(label):
    """'2b. LeakyReLU prevents them' -> (2, 'b'): claims sort by number, then letter (claim 10
    after claim 9)."""
    number, letter = re.match(r"(\d+)([a-z]?)\.", label).groups()
    return int(number), letter


def unmeasured_width(sensitivity, sweep):
    wide = [e for e in sensitivity if e.get("wide", True)]
    censored = sum(bool(e["width_censored"]) for e in wide if e["width"] is not None)
    claim = next(c for c in CLAIMS if c.metric == "lr_width")
    why = ("on both optimizers: neither an estimate nor a bound"
           if censoring_bound(claim, sweep) == "neither" else "too few widths to compare")
    return {"claim": claim.label, "measure": claim.measure, "metric": claim.metric,
            "scale": 1, "why": claim.why, "modelled": False, "exact": True, "contexts": [],
            "verdict": f"not measured: {censored} of {len(wide)} widths are lower bounds "
                       f"(the sweep ended inside the band, or at the last point before a "
                       f"diverged run), {why}"}


def leaky_claim(runs):
    """2b: true by construction; the LeakyReLU units that stay negative, as information."""
    leaky = [r for r in runs if r["activation"] == "leakyrelu" and r.get("never_positive_units") is not None]
    if not leaky:
        return None
    share = float(np.mean([r["never_positive_units"] for r in leaky]))
    return {"claim": "2b. LeakyReLU prevents them",
            "measure": "LeakyReLU units never positive on the held-out images (pp, information)",
            "metric": "never_positive_units", "scale": 100, "effect": share, "exact": True,
            "contexts": [],
            "why": f"With slope {LEAKY_SLOPE:g} below zero no LeakyReLU unit has a zero gradient",
            "verdict": f"true by construction (slope {LEAKY_SLOPE:g} below zero: no unit has a zero "
                       f"gradient); {100 * share:.2f}% of units stay negative on every image, "
                       f"yet keep learning through the leak"}


def parameter_claim(runs):
    """Claim 4: what the strided convolutions add, counted (the same for every seed)."""
    params = {}
    for r in runs:
        params.setdefault(r["downsampling"], set()).add((r["trainable_params"],
                                                         r.get("downsampling_params")))
    if not {"maxpool", "strided"} <= params.keys():
        return None
    strided, maxpool = min(params["strided"]), min(params["maxpool"])[0]
    added = strided[0] - maxpool
    share = (f"; the downsampling layers are {strided[1] / strided[0]:.1%} of the strided "
             f"model's {strided[0]:,}" if strided[1] is not None else "")
    return {"claim": "4. A strided convolution learns the downsampling but adds parameters",
            "measure": "trainable parameters, strided minus max pooling (count)",
            "metric": "trainable_params", "scale": 1, "effect": float(added), "exact": True,
            "contexts": [], "why": "Counted from the built models: the same for every seed",
            "verdict": ("supported" if added > 0 else "contradicted") +
                       f" (exact: +{added:,} parameters, {added / maxpool:+.1%} over max "
                       f"pooling's {maxpool:,}{share})"}


def dying_curves(runs, layers):
    """{(activation, optimizer[, suffix]): {layer: (mean share per epoch, min, max over runs)}}
    from the runs' histories (suffix: the levels of factors beyond the three that the variant's
    name carries, e.g. 'NoBN') (never_positive_<layer> columns), the registry's level order; runs without
    the columns are left out. Split by optimizer too: how many units die depends on the
    optimizer's step as much as on the activation."""
    groups = {}
    for r in factorial.ok_rows(runs):
        if r.get("history") and f"never_positive_{layers[0]}" in r["history"][0]:
            extra = name_suffix(r.get("name", ""))  # a factor beyond the three: its levels stay apart
            key = (r["activation"], r["optimizer"]) + ((extra,) if extra else ())
            groups.setdefault(key, []).append(r)
    curves = {}
    for key in sorted(groups, key=lambda k: (level_order("activation", k[0]),
                                             level_order("optimizer", k[1]), k[2:])):
        group = groups[key]
        epochs = min(len(r["history"]) for r in group)
        curves[key] = {}
        for layer in layers:
            shares = np.array([[row[f"never_positive_{layer}"] for row in r["history"][:epochs]]
                               for r in group])
            curves[key][layer] = (shares.mean(axis=0), shares.min(axis=0), shares.max(axis=0))
    return curves
