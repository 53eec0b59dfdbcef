"""The comparison statistics on synthetic result tables with known, planted effects."""

import itertools

import numpy as np
import pytest

import factor_analysis as fa

FACTORS = {"activation": ("relu", "leakyrelu"), "downsampling": ("maxpool", "strided"),
           "optimizer": ("adam", "sgd")}
DISPLAY = {"relu": "ReLU", "leakyrelu": "LeakyReLU", "maxpool": "MaxPool", "strided": "Strided",
           "adam": "Adam", "sgd": "SGD"}


def synthetic_rows(seeds, effects, noise_sd, seed=0, interaction=0.0):
    """Result rows: 91% + planted main effects (second level adds effects[factor]) + an
    activation x optimizer interaction + a per-seed offset + Gaussian run noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(seeds):
        seed_offset = rng.normal(0, 0.003)  # shared by every variant of a seed: pairing cancels it
        for levels in itertools.product(*FACTORS.values()):
            cell = dict(zip(FACTORS, levels))
            acc = 0.91 + seed_offset + rng.normal(0, noise_sd)
            acc += sum(effects.get(f, 0.0) for f, level in cell.items() if level == FACTORS[f][1])
            if cell["activation"] == "leakyrelu" and cell["optimizer"] == "sgd":
                acc += interaction
            rows.append({**cell, "name": "_".join(levels), "seed": s, "status": "ok",
                         "test_accuracy": acc, "val_accuracy": acc + 0.005, "test_loss": 0.25,
                         "train_seconds": 600.0})
    return rows


def by_factor(effects):
    return {e["factor"]: e for e in effects}


def test_planted_one_point_effect_is_found_and_covered():
    rows = synthetic_rows(seeds=3, effects={"downsampling": 0.01}, noise_sd=0.002)
    effects = by_factor(fa.factor_effects(rows, FACTORS))
    strided = effects["downsampling"]
    assert strided["n"] == 12  # 4 (other factors) x 3 seeds
    assert strided["low"] < 0.01 < strided["high"]
    assert strided["low"] > 0 and strided["significant"]
    assert abs(strided["effect"] - 0.01) < 0.003


def test_null_effects_cover_zero():
    rows = synthetic_rows(seeds=3, effects={"downsampling": 0.01}, noise_sd=0.002)
    effects = by_factor(fa.factor_effects(rows, FACTORS))
    for factor in ("activation", "optimizer"):
        assert effects[factor]["low"] < 0 < effects[factor]["high"], effects[factor]
        assert not effects[factor]["significant"]


def test_null_interval_covers_zero_about_95_percent_of_the_time():
    covered = 0
    for k in range(200):
        sgd = by_factor(fa.factor_effects(synthetic_rows(3, {}, 0.003, seed=k), FACTORS))["optimizer"]
        covered += sgd["low"] < 0 < sgd["high"]
    assert 180 <= covered <= 199  # nominal 95% of 200 draws is 190


def test_seed_offsets_cancel_in_the_pairing():
    # Large per-seed offsets (0.3 pp sd) but tiny run noise: the interval stays narrow.
    rows = synthetic_rows(seeds=3, effects={"optimizer": -0.004}, noise_sd=0.0002)
    sgd = by_factor(fa.factor_effects(rows, FACTORS))["optimizer"]
    assert sgd["high"] - sgd["low"] < 0.001 and sgd["high"] < 0


def test_planted_interaction_is_found():
    rows = synthetic_rows(seeds=3, effects={}, noise_sd=0.001, interaction=0.01)
    found = {(e["factor"], e["by"]): e for e in fa.interactions(rows, FACTORS)}
    assert set(found) == {("activation", "downsampling"), ("activation", "optimizer"),
                          ("downsampling", "optimizer")}
    planted = found[("activation", "optimizer")]
    assert planted["n"] == 6 and planted["low"] < 0.01 < planted["high"] and planted["significant"]
    assert not found[("activation", "downsampling")]["significant"]


def test_missing_cells_and_failed_runs_are_left_out_of_the_pairs():
    rows = synthetic_rows(seeds=2, effects={}, noise_sd=0.001)
    rows[0]["status"] = "failed"  # relu, maxpool, adam, seed 0
    effects = by_factor(fa.factor_effects(rows, FACTORS))
    assert all(e["n"] == 7 for e in effects.values())


def test_mean_interval_matches_the_t_formula():
    mean, sd, low, high = fa.mean_interval([0.90, 0.91, 0.92])
    assert mean == pytest.approx(0.91) and sd == pytest.approx(0.01)
    assert high - mean == pytest.approx(4.302653 * 0.01 / np.sqrt(3), rel=1e-5)
    assert np.isnan(fa.mean_interval([0.9])[2])


def test_variant_summary_and_sentence():
    rows = synthetic_rows(seeds=3, effects={"activation": 0.005}, noise_sd=0.001)
    summary = fa.variant_summary(rows, FACTORS)
    assert len(summary) == 8 and all(e["n"] == 3 for e in summary)
    assert summary[0]["activation"] == "leakyrelu"  # best mean first
    effect = by_factor(fa.factor_effects(rows, FACTORS))["activation"]
    line = fa.effect_sentence(effect, DISPLAY)
    assert line.startswith("LeakyReLU vs ReLU: +0.5") and "significant at 95%" in line


def test_convergence_counts_epochs_and_seconds():
    history = [{"val_accuracy": v, "seconds": 100.0} for v in (0.85, 0.905, 0.915, 0.925)]
    runs = [{"name": "a", "status": "ok", "history": history},
            {"name": "a", "status": "ok", "history": history[:3]}]
    (row,) = fa.convergence(runs)
    assert row[0.90] == {"reached": 2, "epochs": 2.0, "seconds": 200.0}
    assert row[0.92] == {"reached": 1, "epochs": 4.0, "seconds": 400.0}


def test_bonferroni_widens_every_interval_and_controls_the_family():
    rows = synthetic_rows(seeds=3, effects={"downsampling": 0.01}, noise_sd=0.002)
    entries = fa.family_adjusted(fa.factor_effects(rows, FACTORS) + fa.interactions(rows, FACTORS))
    assert len(entries) == 6 and all(e["family_size"] == 6 for e in entries)
    for e in entries:
        assert e["family_low"] < e["low"] < e["effect"] < e["high"] < e["family_high"]
    # t(1 - 0.05/12, 11) / t(0.975, 11): the Bonferroni half-width for 6 comparisons
    strided = by_factor(entries[:3])["downsampling"]  # [3:] are the interactions
    ratio = (strided["family_high"] - strided["effect"]) / (strided["high"] - strided["effect"])
    assert ratio == pytest.approx(3.2081 / 2.2010, rel=1e-3)
    assert strided["family_significant"]  # a 1 pp effect in 0.2 pp noise survives
    alone = fa.family_adjusted(fa.factor_effects(rows, FACTORS)[:1])[0]
    assert (alone["family_low"], alone["family_high"]) == pytest.approx((alone["low"], alone["high"]))


def test_bonferroni_keeps_the_family_error_near_five_percent():
    # All-null grids: how often does at least one of the six intervals miss zero?
    any_false, any_false_adjusted = 0, 0
    for k in range(200):
        rows = synthetic_rows(3, {}, 0.003, seed=1000 + k)
        entries = fa.family_adjusted(fa.factor_effects(rows, FACTORS) + fa.interactions(rows, FACTORS))
        any_false += any(e["significant"] for e in entries)
        any_false_adjusted += any(e["family_significant"] for e in entries)
    assert any_false_adjusted <= 20 < any_false  # measured 12 vs 53 of 200 (nominal 10 vs ~52)


def test_variant_intervals_stay_within_what_the_metric_can_be():
    """Two seeds of a small ECE or a noisy training time give t intervals reaching below 0
    (t(0.975, 1) = 12.7); a share cannot exceed 100%. The clipped end moves, nothing else."""
    rows = synthetic_rows(seeds=2, effects={}, noise_sd=0.002)
    for r in rows:
        r.update(ece=[0.002, 0.012][r["seed"]], train_seconds=[300.0, 1500.0][r["seed"]],
                 test_accuracy=[0.97, 0.999][r["seed"]])
    assert fa.mean_interval([0.002, 0.012])[2] < 0  # what the t interval alone gives
    summary = fa.variant_summary(rows, FACTORS, ("ece", "train_seconds", "test_accuracy"))
    for entry in summary:
        assert entry["ece"]["low"] == 0.0 and entry["train_seconds"]["low"] == 0.0
        assert entry["test_accuracy"]["high"] == 1.0
        assert entry["ece"]["mean"] == pytest.approx(0.007)
        assert entry["ece"]["high"] == pytest.approx(0.007 + 12.706 * 0.005, rel=1e-4)
        assert entry["test_accuracy"]["low"] == pytest.approx(0.9845 - 12.706 * 0.0145, rel=1e-4)
