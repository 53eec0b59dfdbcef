"""The claims' measures against hand-computed examples, the learning-rate protocol's
decisions, and the claims table's verdicts -- no training."""

import itertools
import math

import keras
import numpy as np
import pytest

from fmlab.stats import claims
from fmlab.stats import factorial
from fmlab.stats import lr_tuning
from fmlab.stats.factor_analysis import convergence_measures
from fmlab.measures.model_analysis import activation_probe, never_positive_shares
from fmlab.run.models import build_model, downsampling_params
from fmlab.core.levels import FACTORS
from fmlab.run.variants import Variant


def test_never_positive_shares_count_known_dead_units():
    """A 1x1 conv with weights (1, -1, 0.5) on positive images: channel 2 is never positive
    (1 of 3); a dense layer whose units 0 and 3 have negative weights and bias: 2 of 5."""
    image = keras.Input((4, 4, 1))
    conv = keras.layers.Conv2D(3, 1, name="conv")(image)
    conv_act = keras.layers.ReLU(name="conv_act")(conv)
    dense = keras.layers.Dense(5, name="dense")(keras.layers.Flatten()(conv_act))
    dense_act = keras.layers.LeakyReLU(negative_slope=0.1, name="dense_act")(dense)
    model = keras.Model(image, dense_act)
    model.get_layer("conv").set_weights([np.array([1.0, -1.0, 0.5]).reshape(1, 1, 1, 3),
                                         np.zeros(3)])
    kernel = np.ones((48, 5))
    kernel[:, [0, 3]] = -1.0
    model.get_layer("dense").set_weights([kernel, np.array([-0.1, 0.0, 0.0, -0.1, 0.0])])
    images = np.random.default_rng(0).uniform(0.1, 1.0, (700, 4, 4, 1)).astype("float32")
    probe = activation_probe(model, ["conv_act", "dense_act"])
    # in batches of 512 and 188: a unit positive only in the second batch still counts alive
    assert never_positive_shares(probe, images) == pytest.approx([1 / 3, 2 / 5])
    images[-1] = 0.0  # an all-zero image makes nothing positive, and changes no count
    assert never_positive_shares(probe, images, batch_size=100) == pytest.approx([1 / 3, 2 / 5])


def test_convergence_measures_from_a_known_history():
    history = [{"val_accuracy": v} for v in (0.85, 0.905, 0.91, 0.925)]
    assert convergence_measures(history) == {
        "val_accuracy_epoch1": 0.85, "val_accuracy_epoch2": 0.905,
        "epochs_to_90": 2, "epochs_to_92": 4}
    short = convergence_measures([{"val_accuracy": 0.95}])
    assert short == {"val_accuracy_epoch1": 0.95, "val_accuracy_epoch2": None,
                     "epochs_to_90": 1, "epochs_to_92": 1}
    assert convergence_measures([{"val_accuracy": 0.5}] * 3)["epochs_to_90"] is None


def test_downsampling_parameters_are_the_strided_convolutions():
    # per stride-2 conv: 3x3 x channels^2 weights and batch norm's 2 x channels
    expected = (9 * 32 * 32 + 2 * 32) + 2 * (9 * 64 * 64 + 2 * 64)
    assert downsampling_params(build_model(Variant("relu", "strided", "sgd"))) == expected == 83_264
    assert downsampling_params(build_model(Variant("relu", "maxpool", "sgd"))) == 0


def record(name, seed, multiplier, val, status="ok"):
    return {"name": name, "seed": seed, "lr_multiplier": multiplier, "status": status,
            "val_accuracy": val, "peak_lr": 0.004 * multiplier}


def test_sensitivity_width_and_cost_of_the_shared_peak():
    runs = [record("A", 0, 0.5, 0.90), record("A", 0, 1.0, 0.92), record("A", 0, 2.0, 0.91),
            record("B", 0, 0.5, 0.93), record("B", 0, 1.0, 0.90), record("B", 0, 2.0, 0.80)]
    a, b = lr_tuning.sensitivity(runs)
    # A: best 92% at x1; the 91.5% line is crossed at log2 = -0.25 and +0.5
    assert a["chosen"] == 1.0 and a["loss_at_default"] == 0.0 and a["chosen_peak_lr"] == 0.004
    assert a["width"] == pytest.approx(0.75) and a["width_censored"] is False
    # B: best at the sweep's low edge, which a peak never is: x1, the one point inside; the
    # range is open at that edge (at least 1/6 of a doubling)
    assert b["chosen"] == 1.0 and b["loss_at_default"] == 0.0
    assert b["width"] == pytest.approx(1 / 6) and b["width_censored"] is True


def test_the_choice_uses_only_the_sweep_seeds():
    """Seeds 1 and 2 ran at x1 only; their (higher) accuracy must not decide against x2."""
    runs = [record("A", 0, 1.0, 0.90), record("A", 0, 2.0, 0.91),
            record("A", 1, 1.0, 0.99), record("A", 2, 1.0, 0.99)]
    assert lr_tuning.chosen_multipliers(runs) == {"A": 2.0}
    assert lr_tuning.tuned_runs(runs) == [runs[1]]
    failed = [record("A", 0, 1.0, None, "failed"), record("A", 0, 0.5, 0.8)]
    assert lr_tuning.chosen_multipliers(failed) == {"A": 0.5}


def test_winners_curse_compares_the_chosen_peak_across_seeds():
    """A's sweep (seed 0) chose x2 at 0.93; seeds 1 and 2 there reached 0.91 and 0.92. B
    chose x1; its seed 1 beat seed 0. Runs at other multipliers, failed runs and variants
    without other seeds stay out."""
    def run(name, seed, multiplier, val, test, status="ok"):
        return {**record(name, seed, multiplier, val, status), "test_accuracy": test}
    runs = [run("A", 0, 1.0, 0.92, 0.91), run("A", 0, 2.0, 0.93, 0.92),
            run("A", 1, 2.0, 0.91, 0.925), run("A", 2, 2.0, 0.92, 0.915),
            run("A", 3, 1.0, 0.99, 0.99),  # not at the chosen point
            run("B", 0, 0.5, 0.80, 0.80), run("B", 0, 1.0, 0.90, 0.90),
            run("B", 1, 1.0, 0.91, 0.89), run("B", 2, 1.0, None, None, "failed"),
            run("C", 0, 1.0, 0.95, 0.95), run("C", 0, 2.0, 0.94, 0.94)]
    curse = lr_tuning.winners_curse(runs)
    assert curse["variants"] == 2
    assert curse["sweep_seeds"] == [0] and curse["other_seeds"] == [1, 2]
    assert curse["val_accuracy"]["sweep"] == pytest.approx((0.93 + 0.90) / 2)
    assert curse["val_accuracy"]["others"] == pytest.approx((0.915 + 0.91) / 2)
    assert curse["val_accuracy"]["ahead"] == 1  # A ahead, B behind
    assert curse["test_accuracy"]["others"] == pytest.approx((0.92 + 0.89) / 2)
    assert curse["test_accuracy"]["ahead"] == 1  # A: 0.92 vs 0.92 is not ahead; B 0.90 > 0.89
    # the split: seed 0's validation minus test at its unchosen points (A x1 +1.0 pp, B x0.5
    # 0.0) against the other seeds' at the chosen ones (A -0.5, B +2.0)
    assert curse["split"]["sweep_unchosen"] == pytest.approx(0.005)
    assert curse["split"]["others"] == pytest.approx(0.0075) and curse["split"]["variants"] == 2
    assert lr_tuning.winners_curse(runs[:2] + runs[5:7]) is None  # the sweep alone
    # the failed seed at B's chosen peak is named, not dropped silently
    assert [(r["name"], r["seed"]) for r in lr_tuning.failed_at_chosen(runs)] == [("B", 2)]
    from fmlab.report import report_study
    note = report_study.failed_at_chosen_note(lr_tuning.failed_at_chosen(runs))
    assert "1 run failed: B seed 2 (x1: failed)" in note and "lacks it" in note
    assert report_study.failed_at_chosen_note(lr_tuning.failed_at_chosen(runs[:8])) == ""


def test_further_seeds_off_the_chosen_peak_check_the_choice_out_of_sample():
    """A's sweep (seed 0) chose x2 (x1 and x4 beside it); seeds 1 and 2 ran at x2 and at x1,
    seed 3 at x1 only. B's seeds 1-2 ran at its chosen x1 and at x0.5, seed 2 failed at x0.5.
    Only seeds finished at both points count; the sweep seed never does."""
    runs = [record("A", 0, 1.0, 0.920), record("A", 0, 2.0, 0.930), record("A", 0, 4.0, 0.900),
            record("A", 1, 2.0, 0.925), record("A", 2, 2.0, 0.915),
            record("A", 1, 1.0, 0.920), record("A", 2, 1.0, 0.918), record("A", 3, 1.0, 0.990),
            record("B", 0, 0.5, 0.900), record("B", 0, 1.0, 0.910), record("B", 0, 2.0, 0.890),
            record("B", 1, 1.0, 0.905), record("B", 2, 1.0, 0.909),
            record("B", 1, 0.5, 0.907), record("B", 2, 0.5, None, "failed")]
    check = lr_tuning.off_peak_seeds(runs)
    a, b = check["points"]
    assert (a["name"], a["chosen"], a["other"], a["seeds"]) == ("A", 2.0, 1.0, [1, 2])
    assert a["at_chosen"] == pytest.approx(0.92) and a["at_other"] == pytest.approx(0.919)
    assert (b["chosen"], b["other"], b["seeds"]) == (1.0, 0.5, [1])
    assert b["at_chosen"] - b["at_other"] == pytest.approx(-0.002)
    assert check["difference"] == pytest.approx((0.001 - 0.002) / 2) and check["ahead"] == 1
    # two points: t with 1 df, 12.71 x the standard error of the mean difference
    half = 12.706 * np.std([0.001, -0.002], ddof=1) / np.sqrt(2)
    assert check["low"] == pytest.approx(check["difference"] - half, rel=1e-3)
    from fmlab.report import report_study
    note = report_study.off_peak_note(check)
    assert "seeds 1, 2 also ran at 2 points" in note and "A x2 vs x1 +0.10" in note
    assert "B x1 vs x0.5 -0.20" in note and "ahead at 1 of 2" in note
    assert lr_tuning.off_peak_seeds(runs[:5] + runs[8:13]) is None  # further seeds at peaks only
    # any measure the runs record, e.g. test accuracy (here validation + 1 pp: same gaps)
    shifted = [{**r, "test_accuracy": r["val_accuracy"] and r["val_accuracy"] + 0.01} for r in runs]
    on_test = lr_tuning.off_peak_seeds(shifted, measure="test_accuracy")
    assert on_test["points"][0]["at_chosen"] == pytest.approx(0.93)
    assert on_test["difference"] == pytest.approx(check["difference"])
    one = lr_tuning.off_peak_seeds(runs[:7])
    assert one["low"] is None and "95% interval" not in report_study.off_peak_note(one)
    assert "seed 1 also ran at 1 point" in report_study.off_peak_note(lr_tuning.off_peak_seeds(
        [r for r in runs[:8] if r["seed"] != 2]))


def test_sweep_grows_on_each_side_until_it_leaves_the_band():
    """Each end of a variant's sweep grows by a doubling while its validation accuracy is
    within 0.5 pp of the best: the window of good peaks is then bounded on both sides (or
    stopped at x1/16 or x16, or at a run that diverged)."""
    v = Variant("relu", "maxpool", "sgd")
    name = v.name
    plan = lr_tuning.sweep_plan([v], 0, [0.5, 1, 2], [])
    assert plan == [(v, 0, 0.5), (v, 0, 1), (v, 0, 2)]

    def plan_with(accuracy_of):
        runs = [record(name, 0, 2.0 ** k, accuracy_of(2.0 ** k)) for k in range(-6, 7)]
        return [m for *_, m in lr_tuning.sweep_plan([v], 0, [0.5, 1, 2], runs)]

    # best at x2, 0.93; x1 0.924 and x4 0.926 still in the band, x0.5 0.9 and x8 0.92 out
    curve = {0.5: 0.90, 1: 0.924, 2: 0.93, 4: 0.926, 8: 0.92}
    assert plan_with(lambda m: curve.get(m, 0.5)) == [0.5, 1, 2, 4, 8]
    # both ends inside the band: both grow, one doubling each round
    assert plan_with(lambda m: 0.93 - 0.004 * abs(np.log2(m)) ** 2) == [0.25, 0.5, 1, 2, 4]
    # flat everywhere: stopped at the stated caps
    assert plan_with(lambda m: 0.93) == [2.0 ** k for k in range(-4, 5)]
    # best at the low edge and falling: the low side grows while in the band
    assert plan_with(lambda m: 0.95 - m / 100) == [0.0625, 0.125, 0.25, 0.5, 1, 2]
    diverged = [record(name, 0, 0.5, 0.90), record(name, 0, 1, 0.91),
                record(name, 0, 2, None, "failed")]
    assert [m for *_, m in lr_tuning.sweep_plan([v], 0, [0.5, 1, 2], diverged)] == [0.5, 1, 2]
    # until the first points finish, nothing grows
    assert len(lr_tuning.sweep_plan([v], 0, [0.5, 1, 2], diverged[:2])) == 3
    # a variant left out of `wide` keeps its starting points, however flat its curve
    runs = [record(name, 0, 2.0 ** k, 0.93) for k in range(-6, 7)]
    assert [m for *_, m in lr_tuning.sweep_plan([v], 0, [0.5, 1, 2], runs, wide=["other"])] == [0.5, 1, 2]
    assert len(lr_tuning.sweep_plan([v], 0, [0.5, 1, 2], runs, wide=[name])) == 9


def factorial_runs(metric, effect_of, seeds=range(3), noise=0.001):
    """Runs of all 8 variants: metric = 0.9 + effect_of(variant) + seeded noise."""
    rng = np.random.default_rng(0)
    runs = []
    for levels, seed in itertools.product(itertools.product(*FACTORS.values()), seeds):
        v = Variant(*levels)
        runs.append({"name": v.name, "activation": v.activation, "downsampling": v.downsampling,
                     "optimizer": v.optimizer, "seed": seed, "status": "ok",
                     "trainable_params": 600_000 + (83_264 if v.downsampling == "strided" else 0),
                     "downsampling_params": 83_264 if v.downsampling == "strided" else 0,
                     metric: 0.9 + effect_of(v) + noise * rng.standard_normal()})
    return runs


def claim(rows, number):
    return next(r for r in rows if r["claim"].startswith(number))


def test_claims_table_verdicts():
    # max pooling 1 pp ahead, clearly: claim 3a supported, its effect as the claim signs it
    rows = claims.claims_table(factorial_runs("test_accuracy",
                                              lambda v: 0.01 * (v.downsampling == "maxpool")))
    three = claim(rows, "3a.")
    assert three["verdict"] == "supported" and three["effect"] == pytest.approx(0.01, abs=0.002)
    assert three["df"] == 14 and three["family_low"] < three["low"]  # 7 x (3 seeds - 1)
    assert [c["label"] for c in three["contexts"]] == ["ReLU, Adam", "ReLU, SGD",
                                                        "LeakyReLU, Adam", "LeakyReLU, SGD"]
    # SGD 1 pp behind Adam: claim 6a ("SGD generalises better") contradicted
    rows = claims.claims_table(factorial_runs("test_accuracy", lambda v: -0.01 * (v.optimizer == "sgd")))
    assert claim(rows, "6a.")["verdict"] == "contradicted"
    # no effect, little noise: the Bonferroni interval inside +-0.2 pp
    rows = claims.claims_table(factorial_runs("test_accuracy", lambda v: 0.0, noise=0.0002))
    assert claim(rows, "3a.")["verdict"] == "no practical effect (within ±0.2 pp)"
    # no effect and much noise: inconclusive, with what the design detects and the seeds needed
    rows = claims.claims_table(factorial_runs("test_accuracy", lambda v: 0.0, noise=0.01))
    three = claim(rows, "3a.")
    assert three["verdict"].startswith("inconclusive (this design detects ±")
    assert "seeds would" in three["verdict"] or "more than 50 seeds" in three["verdict"]
    four = claim(rows, "4.")
    assert four["effect"] == 83_264 and four["verdict"].startswith("supported (exact: +83,264 "
                                                                   "parameters, +13.9% over")
    # one seed: effects without intervals, no verdict, and what a verdict needs
    rows = claims.claims_table(factorial_runs("test_accuracy", lambda v: 0.01 * (v.downsampling == "maxpool"),
                                              seeds=[0]))
    three = claim(rows, "3a.")
    assert three["verdict"] == claims.NO_VERDICT and "--seeds 0 1 2" in three["verdict"]
    assert three["effect"] == pytest.approx(0.01, abs=0.003) and np.isnan(three["low"])

    # every measure recorded: the claims in their own order (5b needs a sweep)...
    runs = factorial_runs("test_accuracy", lambda v: 0.0, noise=0.01)
    for name in ("val_accuracy_early", "never_positive_units", "generalization_gap", "shift_consistency"):
        for run, other in zip(runs, factorial_runs(name, lambda v: 0.0, noise=0.01)):
            run[name] = other[name]
    assert [r["claim"][:3] for r in claims.claims_table(runs)] == [
        "1. ", "2a.", "2b.", "2c.", "3a.", "3b.", "4. ", "5a.", "6a.", "6b."]
    # ...also where one activation ran: no activation claim, the rest in order
    relu_only = [r for r in runs if r["activation"] == "relu"]
    assert [r["claim"][:3] for r in claims.claims_table(relu_only)] == [
        "2a.", "3a.", "3b.", "4. ", "5a.", "6a.", "6b."]
    # a third level (GELU) is left out of the claims: the same table as without it
    gelu = [{**r, "activation": "gelu", "name": r["name"].replace("LeakyReLU", "GELU")}
            for r in runs if r["activation"] == "leakyrelu"]
    with_gelu = claims.claims_table(runs + gelu)
    assert [r["effect"] for r in with_gelu if "effect" in r] == pytest.approx(
        [r["effect"] for r in claims.claims_table(runs) if "effect" in r])


def test_dying_units_depend_on_the_context_and_the_verdict_says_on_what():
    dead = {("maxpool", "adam"): 0.40, ("maxpool", "sgd"): 0.10, ("strided", "adam"): 0.10,
            ("strided", "sgd"): 0.0}
    runs = factorial_runs("never_positive_units",
                          lambda v: -0.9 + (dead[(v.downsampling, v.optimizer)]
                                            if v.activation == "relu" else 0.0), noise=0.002)
    two = claim(claims.claims_table(runs), "2a.")
    assert two["effect"] == pytest.approx(0.15, abs=0.003) and two["verdict"].startswith("supported")
    assert "depends on the context" in two["verdict"] and "with MaxPool, Adam" in two["verdict"]
    assert claim(claims.claims_table(runs), "2b.")["verdict"].startswith("true by construction")


@pytest.mark.parametrize("low, high, fw_low, fw_high, expected", [
    (0.001, 0.004, -0.001, 0.006, "leans for"),
    (-0.004, -0.001, -0.006, 0.001, "leans against"),
    (0.0005, 0.0015, -0.0005, 0.0018, "no practical effect (within ±0.2 pp); leans for"),
    # a direction that is certain and too small to matter at once: both said
    (0.0008, 0.0016, 0.0003, 0.0019, "supported, but smaller than the effect of interest (within ±0.2 pp)"),
    (-0.0016, -0.0008, -0.0019, -0.0003, "contradicted, but smaller than the effect of interest"),
    (0.001, 0.004, 0.0005, 0.0045, "supported"),
    (-0.004, 0.004, -0.006, 0.006, "inconclusive (this design detects"),
    # powered for +-0.2 pp (se 0.04 pp), the estimate halfway to -0.2: open, but not for want
    # of seeds
    (-0.00166, 0.00006, -0.00212, 0.00052, "inconclusive (this design detects ±0.1"),
])
def test_every_verdict_word_from_its_intervals(low, high, fw_low, fw_high, expected):
    entry = {"modelled": True, "low": low, "high": high, "family_low": fw_low,
             "family_high": fw_high, "effect": (low + high) / 2, "se": (high - low) / 4.3,
             "df": 14.0, "seeds": 3, "cells": 8, "scale": 100, "smallest": 0.002,
             "heterogeneity_p": 0.5, "contexts": []}
    text = claims.verdict(entry, 0.05 / 8)
    assert text.startswith(expected)
    assert ("smaller than the effect of interest" in text) == ("smaller" in expected)
    if text.startswith("inconclusive"):  # the seeds needed, unless the design has enough
        needed = factorial.seeds_needed(entry, 3, 8, 0.002, 0.05 / 8)
        assert (f"~{needed} seeds would detect ±0.2" in text) == (needed > 3)
        suffice = "the seeds suffice; the Bonferroni interval spans zero and -0.2)"
        assert (suffice in text) == (needed <= 3)


def test_detectable_effect_has_the_power_it_claims():
    """At the a-priori detectable effect the t test on the model's df has 80% power; more
    seeds shrink the standard error, and seeds_needed finds where +-0.2 pp is reached."""
    from scipy import stats

    from fmlab.stats import factorial

    se, df, alpha = 0.001, 14, 0.05 / 8
    effect = factorial.detectable_effect(se, df, alpha)
    critical = stats.t.ppf(1 - alpha / 2, df)
    power = stats.nct.sf(critical, df, effect / se) + stats.nct.cdf(-critical, df, effect / se)
    assert power == pytest.approx(0.8, abs=1e-3)
    needed = factorial.seeds_needed({"se": se, "df": df}, 3, 8, 0.002, alpha)
    assert needed > 3
    assert factorial.power(0.002, se * math.sqrt(3 / needed), 7 * (needed - 1), alpha) >= 0.8
    assert factorial.power(0.002, se * math.sqrt(3 / (needed - 1)), 7 * (needed - 2), alpha) < 0.8


def test_early_accuracy_skips_the_warm_up():
    history = [{"val_accuracy": v} for v in (0.5, 0.8, 0.85, 0.9, 0.91, 0.92, 0.93, 0.94)]
    assert claims.early_accuracy(history, warmup_epochs=1) == pytest.approx((0.8 + 0.85 + 0.9) / 3)
    assert claims.early_accuracy(history[:2]) == pytest.approx(0.8)
    assert claims.early_accuracy([]) is None


def test_dying_curves_group_by_activation_and_optimizer():
    def run(activation, optimizer, shares, status="ok"):
        return {"activation": activation, "optimizer": optimizer, "status": status,
                "history": [{"never_positive_a": s, "never_positive_b": 0.0} for s in shares]}
    curves = claims.dying_curves([run("leakyrelu", "sgd", [0.0, 0.0]),
                                  run("relu", "adam", [0.4, 0.2]),
                                  run("relu", "adam", [0.2, 0.1, 0.1]),  # longer: cut to 2
                                  run("relu", "adam", [0.9, 0.9], status="failed"),
                                  {"activation": "relu", "optimizer": "sgd", "status": "ok",
                                   "history": [{"val_accuracy": 0.9}]}],  # not measured
                                 ["a", "b"])
    assert list(curves) == [("relu", "adam"), ("leakyrelu", "sgd")]
    mean, low, high = curves[("relu", "adam")]["a"]
    assert mean == pytest.approx([0.3, 0.15]) and list(low) == [0.2, 0.1] and list(high) == [0.4, 0.2]
    assert list(curves[("leakyrelu", "sgd")]["b"][0]) == [0.0, 0.0]


def test_little_tuning_claim_counts_censored_widths_as_bounds():
    """5b compares each Adam variant's width (doublings within 0.5 pp of its best) with its SGD
    twin's over the four contexts. A censored width (the sweep ended inside the band) is a
    lower bound: censored on Adam's side only, the effect is at least the estimate, so only
    "supported" / "leans for" can be said; on SGD's side only, at most, so only
    "contradicted" / "leans against"; on both sides, nothing."""
    runs = factorial_runs("test_accuracy", lambda v: 0.0)
    names = sorted({r["name"] for r in runs})
    adam = [n for n in names if n.endswith("Adam")]
    sgd = [n for n in names if n.endswith("SGD")]

    def five_b(censored, adam_width=2.0, sgd_width=1.0):
        widths = {n: (adam_width if n in adam else sgd_width) + 0.05 * i
                  for i, n in enumerate(names)}
        sensitivity = [{"name": n, "width": w, "width_censored": n in censored}
                       for n, w in widths.items()]
        return claim(claims.claims_table(runs, sensitivity), "5b.")

    clear = five_b(censored=set(), adam_width=3.0)
    assert clear["df"] == 3 and clear["effect"] == pytest.approx(2.0, abs=0.2)
    assert clear["verdict"] == "supported" and clear["bound"] is None
    # a difference of about one doubling, certain but inside +-1: both are said
    assert five_b(censored=set())["verdict"].startswith(
        "supported, but smaller than the effect of interest (within ±1 doublings)")
    # the widest Adam window stopped at a cap: all eight still count, the effect a lower bound
    capped = five_b(censored={adam[-1]})
    assert capped["bound"] == "lower" and capped["runs"] == 8
    assert capped["verdict"] == "supported (a lower bound: 1 censored width counted at its lower bound)"
    # Adam's lower bounds below SGD's widths: the estimate is negative, yet no contradiction
    below = five_b(censored=set(adam), adam_width=1.0, sgd_width=2.0)["verdict"]
    assert below.startswith("inconclusive (this design detects ±") and below.endswith(
        " doublings with 80% power; a lower bound: 4 censored widths counted at their lower bounds)")
    # SGD censored, Adam narrower: an upper bound below zero contradicts the claim
    upper = five_b(censored=set(sgd), adam_width=1.0, sgd_width=2.0)
    assert upper["bound"] == "upper" and upper["verdict"].startswith("contradicted (an upper")
    # with a lower bound, no equivalence either: equal widths are inconclusive
    level = five_b(censored={adam[0]}, adam_width=1.0, sgd_width=1.0)["verdict"]
    assert level.startswith("inconclusive (this design detects ±") and "; a lower bound" in level
    for censored in (set(names), {adam[0], sgd[0]}):  # lower bounds on both sides: nothing
        blind = five_b(censored)
        assert blind["verdict"].startswith(f"not measured: {len(censored)} of 8 widths are "
                                           "lower bounds")
        assert blind["verdict"].endswith("on both optimizers: neither an estimate nor a bound")
        assert "effect" not in blind and not blind["modelled"]

    # swept wide on the ReLU variants only (a 2x2 of optimizer x downsampling): the others'
    # widths stay out even where bounded, and the comparison has one residual df
    def five_b_wide(wide):
        sensitivity = [{"name": n, "width": (2.0 if n in adam else 1.0) + 0.05 * i,
                        "width_censored": False, "wide": n in wide} for i, n in enumerate(names)]
        return claim(claims.claims_table(runs, sensitivity), "5b.")

    relu = {n for n in names if "_ReLU_" in n}
    assert five_b_wide(relu)["df"] == 1
    assert five_b_wide(set())["verdict"] == ("not measured: 0 of 0 widths are lower bounds (the "
                                              "sweep ended inside the band, or at the last point "
                                              "before a diverged run), too few widths to compare")


def test_little_tuning_contexts_are_the_observed_differences():
    """5b's model is additive in the optimizer (its variation over the contexts is the error),
    so the model gives every context the average; the forest plot's rows are instead each
    context's own Adam-minus-SGD width, with no interval (one seed each)."""
    runs = factorial_runs("test_accuracy", lambda v: 0.0)
    widths = {"CNN_ReLU_MaxPool_Adam": 4.0, "CNN_ReLU_MaxPool_SGD": 3.5,
              "CNN_ReLU_Strided_Adam": 5.0, "CNN_ReLU_Strided_SGD": 4.5,
              "CNN_LeakyReLU_MaxPool_Adam": 4.0, "CNN_LeakyReLU_MaxPool_SGD": 4.5,
              "CNN_LeakyReLU_Strided_Adam": 6.0, "CNN_LeakyReLU_Strided_SGD": 5.0}
    sensitivity = [{"name": n, "width": w, "width_censored": False} for n, w in widths.items()]
    five_b = claim(claims.claims_table(runs, sensitivity), "5b.")
    observed = {c["label"]: c["effect"] for c in five_b["contexts"]}
    assert observed == pytest.approx({"ReLU, MaxPool": 0.5, "ReLU, Strided": 0.5,
                                      "LeakyReLU, MaxPool": -0.5, "LeakyReLU, Strided": 1.0})
    assert five_b["effect"] == pytest.approx(0.375) and np.isfinite(five_b["low"])
    assert all(np.isnan(c["low"]) and np.isnan(c["high"]) for c in five_b["contexts"])
    # the widest window stopped at a cap: its context's difference is a bound, and says so
    sensitivity[6]["width_censored"] = True
    capped = claim(claims.claims_table(runs, sensitivity), "5b.")
    assert [c["label"] for c in capped["contexts"]] == [
        "ReLU, MaxPool", "ReLU, Strided", "LeakyReLU, MaxPool", "LeakyReLU, Strided (a bound)"]


def test_seed_plan_from_the_pooled_residual_spread():
    """The seeds a test-accuracy main effect of +-0.2 pp needs: a 2^3 main effect with n seeds
    has standard error sigma / sqrt(2n) on 7(n - 1) df; at the plan's count the power reaches
    80%, one seed fewer it does not. More noise asks for more seeds; one seed plans nothing."""
    from fmlab.stats import factorial

    runs = factorial_runs("test_accuracy", lambda v: 0.003 * (v.optimizer == "sgd"),
                          seeds=range(10), noise=0.0015)
    plan = claims.seed_plan(claims.claims_table(runs), family=8)
    assert plan["df"] == 63 and plan["seeds"] == 10
    assert plan["sigma"] == pytest.approx(0.0015, rel=0.25)
    for needed, alpha in ((plan["needed"], 0.05), (plan["needed_family"], 0.05 / 8)):
        def power(n):
            return factorial.power(0.002, plan["sigma"] / math.sqrt(2 * n), 7 * (n - 1), alpha)
        assert power(needed) >= 0.8 > power(needed - 1)
    assert plan["needed_family"] > plan["needed"]
    detectable = plan["detectable"]
    assert factorial.power(detectable, plan["sigma"] / math.sqrt(20), 63, 0.05 / 8) == \
        pytest.approx(0.8, abs=1e-3)
    noisy = claims.seed_plan(claims.claims_table(factorial_runs(
        "test_accuracy", lambda v: 0.0, seeds=range(10), noise=0.006)), family=8)
    assert noisy["needed_family"] is None or noisy["needed_family"] > plan["needed_family"]
    one_seed = claims.claims_table(factorial_runs("test_accuracy", lambda v: 0.0, seeds=[0]))
    assert claims.seed_plan(one_seed, 8) is None


def test_claims_section_names_its_seeds_and_family_as_counted(tmp_path):
    """One seed leaves no claim tested: the report says why instead of 'all 0 tested claims';
    with three seeds it counts the family it adjusted for."""
    from fmlab.report import report_study
    runs = factorial_runs("test_accuracy", lambda v: 0.0, seeds=[0])
    title, intro, header, body = report_study.claims_section(runs, None, None, tmp_path)[0][0]
    assert "on 8 runs: each variant" in intro and ", seed 0." in intro and "seeds 0" not in intro
    assert "0 tested claims" not in intro
    assert "Bonferroni" in header and "Bonferroni (x0)" not in header
    assert "leaves no residual" in intro
    [(_, intro, header, _)], figures = report_study.claims_section(
        factorial_runs("test_accuracy", lambda v: 0.0), None, None, tmp_path)
    family = int(header[4].removeprefix("Bonferroni (x").removesuffix(")"))
    assert family > 0 and f"all {family} tested claims" in intro and "on 24 runs: each variant" in intro
    assert ", seeds 0, 1, 2." in intro and "failed" not in intro
    runs = factorial_runs("test_accuracy", lambda v: 0.0)
    runs[0] = {**runs[0], "status": "failed"}
    intro = report_study.claims_section(runs, None, None, tmp_path)[0][0][1]
    assert "on 23 runs" in intro and f"missing from the model: {runs[0]['name']} seed {runs[0]['seed']}." in intro
    assert figures and figures[0][0].exists()


def test_the_claims_are_read_again_without_the_seed_that_chose_the_peaks():
    """Seed 0's sweep chose every peak, so its runs there are selected: the claims are read
    again on seeds 1-4 alone and the report names every verdict that changes. Planted: no
    effect anywhere, but seed 0 1 pp better with max pooling (a selection artefact)."""
    from fmlab.report import report_study

    def swept_at_zero(runs):
        return [{"name": n, "sweep_seeds": [0], "width": 3.0, "width_censored": False}
                for n in {r["name"] for r in runs}]
    clean = factorial_runs("test_accuracy", lambda v: 0.0, seeds=range(5))
    note = report_study.sweep_seed_note(clean, swept_at_zero(clean),
                                        claims.claims_table(clean, swept_at_zero(clean)))
    assert "Without the sweep's seed 0, whose" in note and "seeds 1, 2, 3, 4 alone (up to 21" in note
    assert note.endswith("every tested claim keeps its verdict.")
    lifted = [{**r, "test_accuracy": r["test_accuracy"] + 0.01 * (r["seed"] == 0 and r["downsampling"] == "maxpool")}
              for r in clean]
    rows = claims.claims_table(lifted, swept_at_zero(lifted))
    assert claim(rows, "3a.")["verdict"] == "leans for"
    note = report_study.sweep_seed_note(lifted, swept_at_zero(lifted), rows)
    assert "the verdict differs for" in note and "3a (leans for -> no practical effect, +0.01)" in note
    assert report_study.sweep_seed_note(clean, None, rows) == ""  # no sweep: nothing chose
    two = [r for r in clean if r["seed"] < 2]  # one seed beside the sweep's: no residual
    assert report_study.sweep_seed_note(two, swept_at_zero(two), claims.claims_table(two)) == ""
    # a variant without seed 1-4 runs yet (a grid mid-way): no model of those seeds, no note
    gap = [r for r in clean if not (r["name"] == clean[0]["name"] and r["seed"] > 0)]
    assert report_study.sweep_seed_note(gap, swept_at_zero(gap), claims.claims_table(gap)) == ""
