"""The report's statistics over seeds: variants (mean, sd, interval), factor effects and
interactions from the replicated factorial model, convergence speed, calibration and shift
robustness -- as (title, intro, header, rows) tables, sentences and figures for report.py.
"""

import dataclasses

import numpy as np

from fmlab.stats import factor_analysis as fa
from fmlab.measures.model_analysis import ECE_BINS
from fmlab.report.wording import format_interval, seeds_phrase, significance_words
from fmlab.figures.plots import plot_calibration, plot_shift_robustness, variant_label


def adjusted_effects(ok, factors, metric):
    """Main effects and interactions of one metric, with Bonferroni intervals over all rows."""
    effects, pair_effects = fa.effects_and_interactions(ok, factors, metric)
    adjusted = fa.with_family_significance(effects + pair_effects)  # read together: family-wise too
    return adjusted[:len(effects)], adjusted[len(effects):]


def pm(stat, scale=100, digits=2, unit="%"):
    """'mean ± sd [low, high]' of a variant_summary entry."""
    if not np.isfinite(stat["sd"]):
        return f"{scale * stat['mean']:.{digits}f}{unit}"
    return (f"{scale * stat['mean']:.{digits}f}{unit} ± {scale * stat['sd']:.{digits}f} "
            f"[{scale * stat['low']:.{digits}f}, {scale * stat['high']:.{digits}f}]")


def effects_table(title, what, effects, pair_effects, display):
    """A (title, intro, header, rows) table of main effects and interactions on one metric."""
    adjusted = effects + pair_effects
    return (title,
            f"One model for every row: the replicated factorial of the design choices with "
            f"seeds as blocks (OLS). A main effect is a level's mean {what} minus its factor's "
            "reference level's, averaged with equal weight over the other choices and the "
            "seeds; an interaction is how one choice's effect changes between two levels of "
            "another (zero when effects add up). Intervals use the model's residual "
            f"variance; the Bonferroni interval is wide enough for all {len(adjusted)} rows to "
            f"hold at once with {fa.CONFIDENCE:.0%} confidence: use it when reading the table "
            "as a whole.",
            ["comparison", "effect (pp)", f"{fa.CONFIDENCE:.0%} interval (pp)",
             f"Bonferroni interval (x{len(adjusted)})", "residual df", "verdict"],
            [[fa.comparison_label(e, display) + (" (interaction)" if "by" in e else ""),
              f"{100 * e['effect']:+.2f}", format_interval(e["low"], e["high"]),
              format_interval(e["family_low"], e["family_high"]), f"{e['df']:.0f}", significance_words(e)]
             for e in adjusted])


@dataclasses.dataclass(frozen=True)
class Comparison:
    """The comparison's (title, intro, header, rows) tables: the variants over seeds and the
    factor effects (accuracy), and the convergence speed (read after the study's sections)."""
    accuracy: list
    speed: tuple


def statistics_sections(runs, factors, display, tuned=False):
    """The multi-seed comparison (Comparison), plus the data of the factor-effects figure.
    tuned: the runs are each variant's at its chosen learning rate, out of a sweep."""
    ok = [r for r in runs if r["status"] == "ok"]
    summary = fa.variant_summary(ok, factors)
    effects, pair_effects = adjusted_effects(ok, factors, "test_accuracy")
    tables = [("Variants over seeds",
               f"Mean ± sample standard deviation [{fa.CONFIDENCE:.0%} t interval of the mean, "
               f"clipped at 0 (and 100%) where the metric ends] over "
               f"{seeds_phrase(ok)}; best mean test accuracy first." +
               (" Each variant at its tuned peak learning rate (chosen on validation: see "
                "'Learning rate, tuned per variant')." if tuned else ""),
               ["variant", "seeds", "test acc", "val acc", "test loss", "train time (min)"],
               [[e["name"], str(e["n"]), pm(e["test_accuracy"]), pm(e["val_accuracy"]),
                 pm(e["test_loss"], 1, 4, ""), pm(e["train_seconds"], 1 / 60, 1, "")]
                for e in summary])]
    if effects:
        tables.append(effects_table("Factor effects on test accuracy", "test accuracy",
                                    effects, pair_effects, display))
    speed = fa.convergence(ok)
    thresholds = fa.CONVERGENCE_THRESHOLDS

    def reached(entry, t):
        c = entry[t]
        if not c["reached"]:
            return f"never (0/{entry['n']})"
        return f"{c['epochs']:.1f} ep, {c['seconds'] / 60:.1f} min ({c['reached']}/{entry['n']})"

    speed_table = (
        "Convergence speed",
        "Epochs and minutes of training until validation accuracy first reached each level, "
        "mean over the seeds that reached it (how many did, in brackets).",
        ["variant"] + [f"to {100 * t:.0f}% val acc" for t in thresholds],
        [[e["name"]] + [reached(e, t) for t in thresholds] for e in speed])
    return (Comparison(tables, speed_table), effects, pair_effects,
            seed_points(ok, summary, "test_accuracy"))


def seed_points(ok, summary, metric):
    """(variant label, [metric per seed], (mean, low, high)) per variant, summary's order."""
    by_name = {}
    for r in ok:
        by_name.setdefault(r["name"], []).append(r[metric])
    return [(variant_label(e), by_name[e["name"]], (e[metric]["mean"], e[metric]["low"], e[metric]["high"]))
            for e in summary]


BEYOND_INTRO = ("Accuracy differences between the variants are tenths of a point; the design "
                "choices may also change how far the confidence can be trusted (Guo et al. 2017) "
                "and whether a one-pixel shift changes the answer (Zhang 2019: max pooling and "
                "strided convolutions alias). Effects are paired over seeds like accuracy's.")
BEYOND_METRICS = ("ece", "nll", "shift_consistency", "shift_accuracy_1px", "shift_accuracy_2px",
                  "shift_accuracy_3px", "test_accuracy")


def beyond_accuracy(ok, factors, display, output_dir):
    """Calibration and shift robustness: tables, effect sentences, and the two figures with
    their captions. ok: finished runs that carry their analysis."""
    ok = [r for r in ok if "analysis" in r]
    if not ok:
        return [], [], []
    summary = fa.variant_summary(ok, factors, BEYOND_METRICS)
    by_name = {}
    for r in ok:
        by_name.setdefault(r["name"], []).append(r)
    diagrams = []
    for e in sorted(summary, key=lambda e: e["ece"]["mean"]):
        group = by_name[e["name"]]
        pooled = {k: np.sum([r["analysis"]["reliability"][k] for r in group], axis=0)
                  for k in ("count", "correct", "confidence")}
        diagrams.append((variant_label(e), pooled, (e["ece"]["mean"], e["ece"]["low"], e["ece"]["high"])))
    curves = [(e, variant_label(e), {k: float(np.mean([r["analysis"]["shift_accuracy"][k] for r in by_name[e["name"]]]))
                                     for k in by_name[e["name"]][0]["analysis"]["shift_accuracy"]})
              for e in summary]
    consistency_order = sorted(summary, key=lambda e: -e["shift_consistency"]["mean"])
    n_seeds = len({r["seed"] for r in ok})
    over = f"mean over {seeds_phrase(ok)}" if n_seeds > 1 else "one seed"
    tables = [
        ("Calibration",
         f"Expected calibration error (ECE, {ECE_BINS} equal-width confidence bins; Guo et al. 2017) and "
         f"negative log-likelihood on the test set, {over}: mean ± sd [95% interval, clipped at 0]. "
         "Lower is better for both; an ECE of 1% means confidence and accuracy differ by 1 point on "
         "average.",
         ["variant", "seeds", "ECE", "NLL", "test acc"],
         [[e["name"], str(e["n"]), pm(e["ece"]), pm(e["nll"], 1, 4, ""), pm(e["test_accuracy"])]
          for e in sorted(summary, key=lambda e: e["ece"]["mean"])]),
        ("Shift robustness",
         f"Test accuracy with every image shifted by 1-3 pixels in one of the eight directions, "
         f"drawn at random per image (an unbiased estimate of the mean over the directions; "
         f"zero fill, no test-time flips) and consistency (Zhang 2019: how often two random "
         f"shifts of up to 3 px give the same class), {over}.",
         ["variant", "unshifted", "1 px", "2 px", "3 px", "consistency"],
         [[e["name"], f"{100 * np.mean([r['analysis']['shift_accuracy']['0'] for r in by_name[e['name']]]):.2f}%",
           pm(e["shift_accuracy_1px"]), pm(e["shift_accuracy_2px"]), pm(e["shift_accuracy_3px"]),
           pm(e["shift_consistency"])] for e in consistency_order]),
    ]
    sentences = []
    for metric, what in (("ece", "ECE"), ("shift_consistency", "shift consistency")):
        effects, pair_effects = adjusted_effects(ok, factors, metric)
        if effects:
            tables.append(effects_table(f"Factor effects on {what}", what, effects, pair_effects,
                                        display))
            sentences += [f"{what}: {fa.effect_sentence(e, display)}" for e in effects + pair_effects]
    figures = [
        (plot_calibration(diagrams, output_dir / "calibration.png"),
         "Reliability diagrams, best calibrated first: bars are the accuracy of the predictions "
         "in each confidence bin, red the gap to their mean confidence (red above a bar: "
         "over-confident; below the diagonal), the inset the share of predictions per bin -- "
         "almost all sit in the top bin, so ECE is decided there."),
        (plot_shift_robustness(curves, seed_points(ok, consistency_order, "shift_consistency"),
                               output_dir / "shift_robustness.png"),
         "Left: how fast accuracy falls when the test images move by 1-3 pixels (lines styled "
         "as in the training curves: colour optimizer, dashes strided convolutions, triangles "
         "LeakyReLU). Right: how often two random shifts of the same image get the same class; "
         "the seeds as points, the mean with its 95% interval."),
    ]
    return tables, sentences, figures
