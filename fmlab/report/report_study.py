"""The report's study sections: the classic claims with verdicts, the learning-rate tuning
behind them, and dying units -- as (title, intro, header, rows) tables and (path, caption)
figures that report.write_report places on the page.

Computing is in claims and lr_tuning, drawing in visualization_utils; this module reads the
runs, calls both and words the result.
"""

import numpy as np

from fmlab.stats import claims, claims_by_factor, factorial
from fmlab.stats import factor_analysis as fa
from fmlab.stats import lr_tuning
from fmlab.store import run_store
from fmlab.measures.model_analysis import UNIT_LAYERS, UNIT_PROBE_IMAGES
from fmlab.core.levels import DEFAULT_LEVEL, LEVELS
from fmlab.report.wording import counted, format_interval, short_verdict
from fmlab.figures.claims import depends_words, plot_claims, plot_claims_by_level, tested_at_every_level
from fmlab.figures.plots import plot_dying_units, plot_lr_sensitivity, variant_label


def claims_section(tuned, factors, sensitivity, output_dir):
    """([tables], [figures]) of the claims; ([], []) when no claim can be tested. With a
    factor beyond the design's three at two levels or more (the training budget, say), the
    claims at each of its levels, then how each depends on it."""
    ok = [r for r in tuned if r["status"] == "ok"]
    extra = [f for f in factors or () if f not in claims.CLAIM_LEVELS
             and len({r.get(f) for r in ok} - {None}) > 1]
    if not extra:
        table, tested, rows = claims_table_section(tuned, sensitivity)
        if table is None:
            return [], []
        return [table], [claims_figure(rows, output_dir)] if tested else []
    factor, held = extra[0], {}  # the claims by the first such factor, the others held
    for other in extra[1:]:      # at their default level (or their first)
        present = [lv for lv in LEVELS[other] if any(r.get(other) == lv for r in ok)]
        held[other] = DEFAULT_LEVEL[other] if DEFAULT_LEVEL[other] in present else present[0]
    tuned = [r for r in tuned if all(r.get(f) == lv for f, lv in held.items())]
    result = claims_by_factor.claims_by_level(tuned, factor, sensitivity)
    tables = []
    for level, rows in result["levels"].items():
        at = [r for r in tuned if r.get(factor) == level]
        where = " at " + ", ".join(LEVELS[f][lv].described for f, lv in {factor: level, **held}.items())
        table, _, _ = claims_table_section(at, sensitivity, rows, where)
        if table:
            tables.append(table)
    if not tables:
        return [], []
    figures = []
    if result["interactions"]:
        tables.append(dependence_table(result, factor))
    if tested_at_every_level(result["levels"]):
        figures.append((
            plot_claims_by_level(result["levels"], {lv: LEVELS[factor][lv].described for lv in result["levels"]},
                                 output_dir / f"claims_by_{factor}.png", factor, result["interactions"]),
            f"Each tested claim's average effect at every level of {factor} (the factorial "
            "model fitted at that level alone): thick, its Bonferroni interval over the claims "
            "at that level; thin, its 95% interval; grey, ± the smallest effect of interest. "
            f"Top right: whether the claim depends on {factor} (the table above)."))
    return tables, figures


def dependence_table(result, factor):
    """The claim x factor interactions: does each verdict depend on the factor?"""
    levels = list(result["levels"])
    body = []
    for e in result["interactions"]:
        s = e["scale"]
        at = {lv: next((r for r in result["levels"][lv] if r["claim"] == e["claim"]), None)
              for lv in (e["reference"], e["level"])}
        effects = [f"{s * r['effect']:+.2f} ({short_verdict(r['verdict'])})" if r and "effect" in r
                   else "–" for r in at.values()]
        body.append([e["claim"], *effects, f"{s * e['effect']:+.2f}",
                     format_interval(e["low"], e["high"], s),
                     format_interval(e["family_low"], e["family_high"], s), depends_words(e)])
    reference = LEVELS[factor][levels[0]].described
    intro = (f"How each claim's effect changes with {factor}: the claim x {factor} interaction "
             f"of one factorial model over every level (the design's three choices, {factor} "
             f"and seeds as blocks, OLS): the claim's signed effect at a level minus at "
             f"{reference}; beside it, each level's effect and verdict from that level's own "
             f"claims table. *Depends on {factor}*: the Bonferroni interval over the "
             f"{len(result['interactions'])} tests excludes zero. 'Not shown' is not 'the "
             f"same': the interval says how large a dependence the data leave open. 5b (one "
             f"seed per variant) has no test." + separate_variances_note(result, factor))
    head = ["claim", *[f"effect (verdict) at {LEVELS[factor][lv].described}" for lv in (levels[0], levels[-1])],
            "difference", "95% interval", f"Bonferroni (x{len(result['interactions'])})",
            f"depends on {factor}"] if len(levels) == 2 else [
        "claim", "effect (verdict) at reference", "effect (verdict) at level", "difference", "95% interval",
        f"Bonferroni (x{len(result['interactions'])})", f"depends on {factor}"]
    return (f"Does the verdict depend on {factor}?", intro, head, body)


def separate_variances_note(result, factor):
    """Whether the dependence verdicts survive each level keeping its own residual variance."""
    checked = [e for e in result["interactions"] if e.get("separate")]
    if not checked:
        return ""
    ratios = [e["separate"]["sigma"][1] / e["separate"]["sigma"][0] for e in checked]
    changed = [f"{e['claim'].split('.')[0]} (depends with "
               f"{'one variance' if e['depends'] else 'separate variances'} only)"
               for e in checked if e["separate"]["depends"] != e["depends"]]
    spread = (f"{min(ratios):.2f}" if f"{min(ratios):.2f}" == f"{max(ratios):.2f}"
              else f"{min(ratios):.2f}-{max(ratios):.2f}")
    reference = LEVELS[factor][checked[0]["reference"]].described
    others = "the other levels'" if len(result["levels"]) > 2 else "the other level's"
    return (f" The model pools the residual variance of every level of {factor}; {others} "
            f"own residual SD is {spread} times {reference}'s over the claims' measures. Read "
            f"with each level's own variance (Welch-Satterthwaite degrees of freedom, "
            f"Bonferroni alike), "
            + (f"the verdict differs for {', '.join(changed)}." if changed else
               f"the same claims depend on {factor}."))


def claims_figure(rows, output_dir):
    return (plot_claims(rows, output_dir / "claims.png"),
            "Each tested claim's effect in every context (the combination of the other two "
            "choices; thin lines: 95% intervals from the model; 5b, one seed per variant: the "
            "observed difference, no interval) and averaged over them "
            "(black, with the Bonferroni interval as a thick bar); the grey band is ± the "
            "smallest effect of interest, the dashed line zero. Right of zero is what the "
            "claim says.")


def claims_table_section(tuned, sensitivity, rows=None, where_suffix=""):
    """(table or None, any tested, rows) of the claims on the tuned runs of one level."""
    rows = claims.claims_table(tuned, sensitivity) if rows is None else rows
    tested = [r for r in rows if r.get("modelled")]
    if not [r for r in rows if not r.get("exact")]:
        return None, False, rows
    family = len(tested)
    body = []
    for r in rows:
        s = r["scale"]
        if r.get("exact"):
            effect = ("–" if "effect" not in r else f"{r['effect']:+,.0f}" if s == 1
                      else f"{s * r['effect']:.2f}")
            body.append([r["claim"], r["measure"], effect, "–", "–", "–", r["verdict"]])
            continue
        fw = format_interval(r["family_low"], r["family_high"], s) if r.get("modelled") else "n/a"
        at = {"lower": "≥ ", "upper": "≤ "}.get(r.get("bound"), "")
        body.append([r["claim"], r["measure"], f"{at}{s * r['effect']:+.2f}",
                     format_interval(r["low"], r["high"], s), fw, f"±{s * r['smallest']:g}", r["verdict"]])
    used = claims.claim_level_runs(tuned)
    seeds = sorted({r["seed"] for r in used})
    where = ("each variant at its tuned peak learning rate (chosen on validation)"
             if sensitivity else "each variant at the recipe's peak learning rate")
    extra = len(used) < len([r for r in tuned if r["status"] == "ok"])
    lost = ", ".join(f"{r['name']} seed {r['seed']}" for r in tuned if r["status"] != "ok")
    intro = (f"Each claim is one contrast of the replicated factorial model (the default two "
             f"levels of each choice, seeds as blocks, OLS), on {len(used)} runs: {where}"
             f", seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"
             + (" (the grid's other levels are left out of the claims)" if extra else "")
             + (f"; failed, so missing from the model: {lost}" if lost else "") +
             ". The effect is signed so that a positive value is what the claim says, averaged "
             "over the other two choices; its 95% interval uses the model's residual variance, "
             + (f"the Bonferroni interval holds for all {family} tested claims at once. "
                if family else "the Bonferroni interval covers every tested claim, and here "
                "none is: one seed (or a missing variant) leaves no residual to measure the "
                "noise with. ") +
             "Verdicts: " + "; ".join(f"*{k}*: {v}" for k, v in claims.VERDICTS.items()) +
             ". Where the effect differs between the contexts beyond noise (the interaction's "
             "F test at the family-wise level) the verdict says on what it depends. "
             "Why each measure: " + " ".join(
                 f"{r['claim'].split('.')[0]}: {r['why']}." for i, r in enumerate(rows)
                 if r["why"] not in [q["why"] for q in rows[:i]]) + strided_units_note(used)
             + seed_plan_note(claims.seed_plan(rows, family))
             + sweep_seed_note(tuned, sensitivity, rows))
    table = (f"The classic claims, tested{where_suffix}", intro,
             ["claim", "measure", "effect", "95% interval",
              f"Bonferroni (x{family})" if family else "Bonferroni",
              "smallest effect of interest", "verdict"], body)
    return table, bool(tested), rows


def strided_units_note(runs):
    """Which strided runs counted the units after their downsampling convolutions too."""
    strided = [r for r in runs if r["downsampling"] == "strided" and "never_positive" in r]
    measured = sum("down1_act" in r["never_positive"] for r in strided)
    if not strided or measured == len(strided):
        return ""
    return (f" Dead units after down1-3 (the strided convolutions' activations) were counted in "
            f"{measured} of the {len(strided)} strided runs; the others count conv1-4 and dense.")


def seed_plan_note(plan):
    """The seeds a test-accuracy main effect of the smallest size of interest needs."""
    if plan is None:
        return ""

    def seeds(n):
        return f"{n} seeds" if n else "more than 50 seeds"
    s = 100 * plan["smallest"]
    return (f" Seeds: test accuracy's residual standard deviation is {100 * plan['sigma']:.2f} pp "
            f"({plan['df']:.0f} df); with {plan['seeds']} seeds per variant a main effect of "
            f"±{100 * plan['detectable']:.2f} pp is detected with {factorial.POWER:.0%} power at the family-wise "
            f"level; ±{s:g} pp needs {seeds(plan['needed_family'])} per variant at that level "
            f"({seeds(plan['needed'])} at the 5% level).")


def sweep_seed_note(tuned, sensitivity, rows):
    """The claims again without the seed whose sweep chose the peaks: its validation accuracy
    at a chosen point is lifted by the choice (the winner's curse), so the seeds that chose
    nothing are a replication free of the selection. Verdicts compared without their
    reasons; 5b, a measure of the sweep itself, is the same in both."""
    swept = {s for e in sensitivity or () for s in e["sweep_seeds"]}
    fresh = [r for r in tuned if r["seed"] not in swept]
    seeds = sorted({r["seed"] for r in claims.claim_level_runs(fresh)})
    if not swept or len(seeds) < 2:
        return ""
    again = {r["claim"].split(".")[0]: r for r in claims.claims_table(fresh, sensitivity)
             if r.get("modelled") and r["metric"] != "lr_width" and r["df"] > 0}
    if not again:  # a variant without such seeds: no model to read them with
        return ""
    changed = [f"{number} ({short_verdict(r['verdict'])} -> {short_verdict(again[number]['verdict'])}, "
               f"{r['scale'] * again[number]['effect']:+.2f})"
               for r in rows if (number := r["claim"].split(".")[0]) in again
               and short_verdict(r["verdict"]) != short_verdict(again[number]["verdict"])]
    df = max(r["df"] for r in again.values())  # the test-accuracy model's
    many = len(swept) > 1
    return (f" Without the sweep's seed{'s' * many} {', '.join(map(str, sorted(swept)))}, whose "
            f"validation accuracy chose the peaks (so {'their' if many else 'its'} runs there are "
            f"selected): on seeds {', '.join(map(str, seeds))} alone (up to {df:.0f} residual df, "
            f"Bonferroni alike) " + (f"the verdict differs for {', '.join(changed)}."
                                          if changed else "every tested claim keeps its verdict."))


def winners_curse_note(curse):
    """The chosen peaks on the seeds that chose them against the seeds that did not."""
    if curse is None:
        return ""

    def seeds(numbers):
        return f"seed{'s' * (len(numbers) > 1)} {', '.join(map(str, numbers))}"
    val, test, n = curse["val_accuracy"], curse["test_accuracy"], curse["variants"]
    return (f" Winner's curse: at the chosen peaks, {seeds(curse['sweep_seeds'])} (whose sweep "
            f"chose them) averaged {100 * val['sweep']:.2f}% validation and "
            f"{100 * test['sweep']:.2f}% test accuracy, {seeds(curse['other_seeds'])} at the same "
            f"peaks {100 * val['others']:.2f}% and {100 * test['others']:.2f}% ({n} variants; "
            f"the sweep's seeds ahead in {val['ahead']} on validation, {test['ahead']} on test). "
            "The validation gap holds the optimism of keeping the best of several noisy points "
            "and any difference between the seeds' validation splits"
            + split_note(curse) + "; the test set chose nothing, and the comparisons above "
            "average over all seeds.")


def split_note(curse):
    """The winner's curse's validation gap cut in two: the sweep seeds' split (their
    validation minus test at the points they did not choose, against the other seeds') and
    the selection (the rest)."""
    split = curse.get("split")
    if not split:
        return ""
    gap = curse["val_accuracy"]["sweep"] - curse["val_accuracy"]["others"]
    own = split["sweep_unchosen"] - split["others"]
    return (f": {100 * gap:+.2f} pp in all. At the points the sweep did not choose, its seeds' "
            f"validation ran {100 * split['sweep_unchosen']:.2f} pp above their test accuracy, "
            f"the other seeds' {100 * split['others']:.2f} pp at the chosen peaks, so the split "
            f"explains {100 * own:+.2f} pp and the selection {100 * (gap - own):+.2f} pp")


def off_peak_note(check):
    """The further seeds run both at a chosen peak and at another point of its sweep: whether
    the choice holds on seeds that did not make it."""
    if check is None:
        return ""
    seeds = sorted({s for p in check["points"] for s in p["seeds"]})
    each = "; ".join(f"{p['name']} x{p['chosen']:g} vs x{p['other']:g} "
                     f"{100 * (p['at_chosen'] - p['at_other']):+.2f}" for p in check["points"])
    interval = ("" if check["low"] is None else
                f", 95% interval {format_interval(check['low'], check['high'])} over the points")
    n = len(check["points"])
    return (f" The choice on seeds that did not make it: seed{'s' * (len(seeds) > 1)} "
            f"{', '.join(map(str, seeds))} also "
            f"ran at {counted(n, 'point')} other than the chosen peak (outside every comparison "
            f"above). Their validation accuracy at the chosen peak minus at the other point (pp): "
            f"{each}. Mean {100 * check['difference']:+.2f} pp{interval}; the chosen peak ahead "
            f"at {check['ahead']} of {n}.")


def failed_at_chosen_note(failed):
    """The seeds that failed at their variant's chosen peak: missing from every comparison."""
    if not failed:
        return ""
    named = ", ".join(f"{r['name']} seed {r['seed']} (x{run_store.lr_multiplier_of(r):g}: "
                      f"{r.get('reason', 'failed').split(' (')[0]})" for r in failed)
    return (f" At the chosen peaks {counted(len(failed), 'run')} failed: {named}. Every "
            f"comparison above lacks {'it' if len(failed) == 1 else 'them'}: a variant's mean "
            "is over its other seeds, the factorial model is fitted to the runs that remain.")


def tuning_section(runs, sensitivity, output_dir):
    """The learning-rate sweep: table (per variant: sweep, chosen peak, cost of the shared
    peak, width of the good range, budget) and lr_sensitivity.png."""
    factors_of = {r["name"]: r for r in runs}
    body, curves = [], []
    for e in sorted(sensitivity, key=lambda e: -(e["best"] or 0)):
        run = factors_of[e["name"]]
        sweep = ", ".join(f"x{m:g}: {'failed' if v is None else f'{100 * v:.2f}'}"
                          for m, _, v in e["points"])
        lost = "–" if e["loss_at_default"] is None else f"{100 * e['loss_at_default']:.2f}"
        width = ("–" if e["width"] is None else
                 f"{'≥ ' if e['width_censored'] else ''}{e['width']:.2f}")
        chosen = "–" if e["chosen"] is None else (
            f"x{e['chosen']:g}" + (f" ({e['chosen_peak_lr']:.3g})" if e["chosen_peak_lr"] else ""))
        body.append([e["name"], sweep, chosen, lost, width,
                     f"{counted(len(e['points']), 'point')} x {counted(len(e['sweep_seeds']), 'seed')}; "
                     f"{counted(e['runs'], 'run')}"])
        curves.append((run, variant_label(run), e["points"], e["chosen"]))
    counts = sorted({len(e["points"]) for e in sensitivity})
    narrow = [e["name"] for e in sensitivity if not e["wide"]]
    budget = ("The sweep rule: each end of a variant's sweep grows by a doubling while its "
              f"validation accuracy is within {100 * lr_tuning.TUNING_BAND:g} pp of the best (up "
              f"to x1/{lr_tuning.MAX_MULTIPLIER} and x{lr_tuning.MAX_MULTIPLIER}, never past a "
              "diverged run), so the budget per variant is unequal by design: "
              + (f"{counts[0]} sweep points each." if len(counts) == 1
                 else f"{counts[0]}-{counts[-1]} sweep points."))
    if narrow:
        wide = [e["name"] for e in sensitivity if e["wide"]]
        budget += (f" To bound the compute, the rule grew the sweeps of {', '.join(wide)} only "
                   f"(the widths claim 5b compares); {', '.join(narrow)}: the starting points.")
    table = ("Learning rate, tuned per variant",
             "Validation accuracy (%) of each variant's sweep over multiples of its optimizer's "
             "peak (mean over the sweep seeds, the seeds run at every point). The chosen "
             f"multiplier is the peak rule's: {lr_tuning.PEAK_RULE_WORDS[lr_tuning.PEAK_RULE]} "
             "(eligible: inside the sweep, with finished neighbours on both sides), so that "
             "near-ties are read as ties rather than broken by one seed's noise; every comparison "
             "here uses it. 'Lost at shared peak': validation accuracy given up at the recipe's "
             "peak (x1) against the chosen one (pp; negative where x1 scored higher on the sweep "
             f"seed); 'width': the range of peaks within {100 * lr_tuning.TUNING_BAND:g} pp of the best, "
             "in doublings (log2; ≥ where the sweep ends inside it). " + budget
             + winners_curse_note(lr_tuning.winners_curse(runs))
             + off_peak_note(lr_tuning.off_peak_seeds(runs))
             + failed_at_chosen_note(lr_tuning.failed_at_chosen(runs)),
             ["variant", "sweep (val acc %)", "chosen (peak)", "lost at shared peak (pp)",
              "width (doublings)", "budget"], body)
    figure = (plot_lr_sensitivity(curves, output_dir / "lr_sensitivity.png", lr_tuning.TUNING_BAND),
              "Validation accuracy against each variant's peak learning rate (log scale), one "
              "panel per optimizer, lines styled as in the training curves; the star is the "
              "chosen peak, the dotted line the recipe's shared one. A flat top means the "
              "optimizer needs little tuning.")
    return table, figure


def dying_section(tuned, output_dir):
    """Dying units: the end-of-training table per variant and dead_units.png over epochs, or
    (None, None) for runs from before the measure."""
    measured = [r for r in tuned if r["status"] == "ok" and "never_positive" in r]
    curves = claims.dying_curves(measured, UNIT_LAYERS)
    if not measured or not curves:
        return None, None
    by_name = {}
    for r in measured:
        by_name.setdefault(r["name"], []).append(r)
    body = [[name, str(len(group))] +
            [f"{100 * np.mean([r['never_positive'][layer] for r in group]):.1f}"
             for layer in UNIT_LAYERS] +
            [f"{100 * np.mean([r['never_positive_units'] for r in group]):.1f}"]
            for name, group in sorted(by_name.items(),
                                      key=lambda kv: -np.mean([r["never_positive_units"] for r in kv[1]]))]
    probe_images = min(r.get("never_positive_images", UNIT_PROBE_IMAGES) for r in measured)
    table = ("Dying units",
             f"Share (%) of units never positive on {probe_images:,} fixed validation images "
             "at the end of training (the evaluated checkpoint), mean over seeds; a conv unit is a "
             "channel (never positive at any position of any image), a dense unit a neuron. After "
             "ReLU such a unit is dead (no output, no gradient); after LeakyReLU only the leak "
             "keeps it learning.",
             ["variant", "seeds", *UNIT_LAYERS, "all units"], body)
    figure = (plot_dying_units(curves, output_dir / "dead_units.png", probe_images),
              "Share of units never positive after each epoch, per activation layer: ReLU "
              "against LeakyReLU, each with Adam and with SGD (mean over their runs, range "
              "shaded; colour = optimizer, marker = activation, as in the training curves).")
    return table, figure


SPEED_AND_GAP = [  # metric, how it reads, scale, unit
    ("val_accuracy_epoch1", "validation accuracy after epoch 1", 100, "pp"),
    ("val_accuracy_epoch2", "validation accuracy after epoch 2", 100, "pp"),
    ("epochs_to_90", "epochs to 90% validation accuracy", 1, "epochs"),
    ("epochs_to_92", "epochs to 92% validation accuracy", 1, "epochs"),
    ("generalization_gap", "train minus test accuracy (inference mode)", 100, "pp"),
    ("loss_gap", "test minus train loss (inference mode)", 1, "nats"),
]


def speed_and_gap_section(tuned, factors, display):
    """Main effects of each factor on the convergence and generalisation measures, paired
    like accuracy's, or None when no pair exists."""
    body = []
    for metric, what, scale, unit in SPEED_AND_GAP:
        for e in fa.factor_effects(tuned, factors, metric):
            body.append([what, fa.comparison_label(e, display),
                         f"{scale * e['effect']:+.2f} {unit}", format_interval(e["low"], e["high"], scale),
                         f"{e['df']:.0f}"])
    if not body:
        return None
    return ("Convergence and generalisation: factor effects",
            "Main effects from the factorial model with seed blocks (a level minus its "
            "factor's reference, averaged over the other choices; 95% interval) on how fast "
            "validation accuracy rises and on the gap between the training set (10,000 images, "
            "scored like the test set) and the test set. A run that never reached a level "
            "leaves the model without that cell: then no interval.",
            ["measure", "comparison", "effect", "95% interval", "residual df"], body)


def study_sections(runs, tuned, factors, output_dir, display, wide=None):
    """The claims tables and figures, then the study's (table, [figures]) parts. runs: every
    finished run, the sweep's too; tuned: those at each variant's chosen multiplier; wide:
    the variants swept wide (None: all)."""
    parts = []
    sensitivity = (lr_tuning.sensitivity(runs, wide=wide)
                   if lr_tuning.is_sweep(runs) else None)
    if sensitivity:
        table, figure = tuning_section(runs, sensitivity, output_dir)
        parts.append((table, [figure]))
    table, figure = dying_section(tuned, output_dir)
    if table:
        parts.append((table, [figure]))
    table = speed_and_gap_section(tuned, factors, display)
    if table:
        parts.append((table, []))
    return claims_section(tuned, factors, sensitivity, output_dir), parts
