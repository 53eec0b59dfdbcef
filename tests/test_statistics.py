"""The comparison statistics on synthetic result tables with known, planted effects."""

import itertools

import numpy as np
import pytest

from fmlab.stats import factor_analysis as fa

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


def exact_rows(seeds=3, interaction=0.004):
    """A 2^3 x 3-seed table with known parts: 0.90, +0.010 for LeakyReLU, -0.006 for strided,
    +0.002 for SGD, +interaction for LeakyReLU with SGD, seed blocks 0/+0.003/-0.002, and a
    fixed pattern of run noise."""
    noise = np.array([1, -2, 0, 3, -1, 2, -3, 1, 0, 2, -1, -2, 3, 0, -1, 1, 2, -3, 1, 0, -2,
                      1, 2, -1]) * 1e-4
    rows, k = [], 0
    for seed, levels in itertools.product(range(seeds), itertools.product(*FACTORS.values())):
        cell = dict(zip(FACTORS, levels))
        acc = (0.90 + 0.010 * (cell["activation"] == "leakyrelu")
               - 0.006 * (cell["downsampling"] == "strided") + 0.002 * (cell["optimizer"] == "sgd")
               + interaction * (cell["activation"] == "leakyrelu" and cell["optimizer"] == "sgd")
               + [0.0, 0.003, -0.002][seed] + noise[k % len(noise)])
        k += 1
        rows.append({**cell, "name": "_".join(levels), "seed": seed, "status": "ok",
                     "test_accuracy": acc})
    return rows


def hand_analysis(rows):
    """Cells x seeds by hand: effects as differences of means, the residual of the full
    factorial + seed model as y - cell mean - seed mean + grand mean, df = 7 x 2."""
    y = {(r["activation"], r["downsampling"], r["optimizer"], r["seed"]): r["test_accuracy"]
         for r in rows}
    cells = list(itertools.product(*FACTORS.values()))
    table = np.array([[y[(*c, s)] for s in range(3)] for c in cells])  # 8 x 3
    residual = table - table.mean(1, keepdims=True) - table.mean(0, keepdims=True) + table.mean()
    sigma2 = (residual ** 2).sum() / 14
    return table, cells, sigma2


def test_effects_and_intervals_match_the_hand_computed_factorial():
    rows = exact_rows()
    table, cells, sigma2 = hand_analysis(rows)
    effects = by_factor(fa.factor_effects(rows, FACTORS))
    for factor, index in (("activation", 0), ("downsampling", 1), ("optimizer", 2)):
        second = [i for i, c in enumerate(cells) if c[index] == FACTORS[factor][1]]
        first = [i for i, c in enumerate(cells) if c[index] == FACTORS[factor][0]]
        expected = table[second].mean() - table[first].mean()
        se = np.sqrt(sigma2 * (1 / 12 + 1 / 12))
        e = effects[factor]
        assert e["effect"] == pytest.approx(expected, abs=1e-12) and e["df"] == 14
        assert e["low"] == pytest.approx(expected - 2.144787 * se, abs=1e-9)
        assert e["high"] == pytest.approx(expected + 2.144787 * se, abs=1e-9)
    # the planted parts, within the fixed noise: +1.0 + 0.4/2 (half the interaction), -0.6,
    # +0.2 + 0.4/2; the seed blocks cancel
    assert effects["activation"]["effect"] == pytest.approx(0.012, abs=3e-4)
    assert effects["downsampling"]["effect"] == pytest.approx(-0.006, abs=3e-4)
    assert effects["optimizer"]["effect"] == pytest.approx(0.004, abs=3e-4)


def test_interactions_are_the_hand_computed_contrasts_and_zero_without_one():
    rows = exact_rows()
    table, cells, sigma2 = hand_analysis(rows)
    found = {(e["factor"], e["by"]): e for e in fa.interactions(rows, FACTORS)}

    def mean_of(**levels):
        return np.mean([table[i].mean() for i, c in enumerate(cells)
                        if all(c[list(FACTORS).index(f)] == v for f, v in levels.items())])
    expected = (mean_of(activation="leakyrelu", optimizer="sgd") - mean_of(activation="relu", optimizer="sgd")
                - mean_of(activation="leakyrelu", optimizer="adam") + mean_of(activation="relu", optimizer="adam"))
    planted = found[("activation", "optimizer")]
    assert planted["effect"] == pytest.approx(expected, abs=1e-12)
    assert planted["effect"] == pytest.approx(0.004, abs=5e-4) and planted["significant"]
    assert planted["high"] - planted["effect"] == pytest.approx(2.144787 * np.sqrt(sigma2 * 4 / 6), abs=1e-9)
    none = fa.interactions(exact_rows(interaction=0.0), FACTORS)
    assert all(abs(e["effect"]) < 5e-4 for e in none)


def test_a_third_level_is_compared_with_the_reference_and_adds_no_false_interaction():
    """A planted +1 pp GELU main effect: the row 'GELU vs ReLU' finds it, every interaction
    contrast stays zero; a planted GELU x SGD interaction shows in that contrast only."""
    levels = {"activation": ("relu", "leakyrelu", "gelu"), "downsampling": ("maxpool", "strided"),
              "optimizer": ("adam", "sgd")}
    rng = np.random.default_rng(3)

    def rows_with(gelu_sgd):
        rows = []
        for seed, cell in itertools.product(range(2), itertools.product(*levels.values())):
            a, d, o = cell
            acc = 0.9 + 0.01 * (a == "gelu") + 0.003 * seed + gelu_sgd * (a == "gelu" and o == "sgd")
            rows.append({"activation": a, "downsampling": d, "optimizer": o, "seed": seed,
                         "status": "ok", "name": "_".join(cell),
                         "test_accuracy": acc + rng.normal(0, 1e-4)})
        return rows
    effects = {(e["factor"], e["level"]): e for e in fa.factor_effects(rows_with(0.0), levels)}
    gelu = effects[("activation", "gelu")]
    assert gelu["reference"] == "relu" and gelu["effect"] == pytest.approx(0.01, abs=3e-4)
    assert fa.comparison_label(gelu, DISPLAY | {"gelu": "GELU"}) == "GELU vs ReLU"
    assert abs(effects[("activation", "leakyrelu")]["effect"]) < 3e-4
    assert all(abs(e["effect"]) < 3e-4 for e in fa.interactions(rows_with(0.0), levels))
    found = {(e["level"], e["by_level"]): e for e in fa.interactions(rows_with(0.008), levels)}
    assert found[("gelu", "sgd")]["effect"] == pytest.approx(0.008, abs=3e-4)
    assert all(abs(e["effect"]) < 3e-4 for k, e in found.items() if k != ("gelu", "sgd"))


def test_null_interval_covers_zero_about_95_percent_of_the_time():
    covered = 0
    for k in range(100):
        sgd = by_factor(fa.factor_effects(synthetic_rows(3, {}, 0.003, seed=k), FACTORS))["optimizer"]
        covered += sgd["low"] < 0 < sgd["high"]
    assert 88 <= covered <= 100  # nominal 95 of 100


def test_seed_blocks_cancel():
    # Large per-seed offsets (0.3 pp sd) but tiny run noise: the interval stays narrow.
    rows = synthetic_rows(seeds=3, effects={"optimizer": -0.004}, noise_sd=0.0002)
    sgd = by_factor(fa.factor_effects(rows, FACTORS))["optimizer"]
    assert sgd["high"] - sgd["low"] < 0.001 and sgd["high"] < 0


def test_one_seed_or_a_missing_cell_gives_effects_without_intervals():
    one = synthetic_rows(seeds=1, effects={"activation": 0.01}, noise_sd=0.0)
    effect = by_factor(fa.factor_effects(one, FACTORS))["activation"]
    assert effect["effect"] == pytest.approx(0.01) and np.isnan(effect["low"])
    rows = synthetic_rows(seeds=2, effects={"activation": 0.01}, noise_sd=0.0)
    rows[0]["status"] = "failed"  # relu, maxpool, adam, seed 0: the cell still has seed 1
    assert np.isfinite(by_factor(fa.factor_effects(rows, FACTORS))["activation"]["low"])
    rows[8]["status"] = "failed"  # ... and seed 1: the cell is empty, no model
    effect = by_factor(fa.factor_effects(rows, FACTORS))["activation"]
    assert np.isnan(effect["low"]) and effect["effect"] == pytest.approx(0.01)


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
    assert line.startswith("LeakyReLU vs ReLU: +0.5") and "significant at 95% (model df 14)" in line


def test_convergence_counts_epochs_and_seconds():
    history = [{"val_accuracy": v, "seconds": 100.0} for v in (0.85, 0.905, 0.915, 0.925)]
    runs = [{"name": "a", "status": "ok", "history": history},
            {"name": "a", "status": "ok", "history": history[:3]}]
    (row,) = fa.convergence(runs)
    assert row[0.90] == {"reached": 2, "epochs": 2.0, "seconds": 200.0}
    assert row[0.92] == {"reached": 1, "epochs": 4.0, "seconds": 400.0}


def test_bonferroni_widens_every_interval():
    rows = synthetic_rows(seeds=3, effects={"downsampling": 0.01}, noise_sd=0.002)
    entries = fa.with_family_significance(fa.factor_effects(rows, FACTORS) + fa.interactions(rows, FACTORS))
    assert len(entries) == 6 and all(e["family_size"] == 6 for e in entries)
    for e in entries:
        assert e["family_low"] < e["low"] < e["effect"] < e["high"] < e["family_high"]
    # t(1 - 0.05/12, 14) / t(0.975, 14): the Bonferroni half-width for 6 rows on 14 df
    strided = by_factor(entries[:3])["downsampling"]
    ratio = (strided["family_high"] - strided["effect"]) / (strided["high"] - strided["effect"])
    assert ratio == pytest.approx(3.0688 / 2.1448, rel=1e-3)
    assert strided["family_significant"]
    alone = fa.with_family_significance(fa.factor_effects(rows, FACTORS)[:1])[0]
    assert (alone["family_low"], alone["family_high"]) == pytest.approx((alone["low"], alone["high"]))


def test_bonferroni_keeps_the_family_error_near_five_percent():
    # All-null grids: how often does at least one of the six intervals miss zero?
    any_false, any_false_adjusted = 0, 0
    for k in range(100):
        rows = synthetic_rows(3, {}, 0.003, seed=1000 + k)
        entries = fa.with_family_significance(sum(fa.effects_and_interactions(rows, FACTORS), []))
        any_false += any(e["significant"] for e in entries)
        any_false_adjusted += any(e["family_significant"] for e in entries)
    assert any_false_adjusted <= 12 < any_false  # nominal ~5 vs ~26 of 100


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


def machine_runs(machine_of, shift=0.003, noise=0.0005, seeds=4):
    """4 cells x `seeds` seeds; test accuracy = cell + seed effects + `shift` on machine "B"
    + noise. machine_of(cell, seed) -> "A" or "B"."""
    rng = np.random.default_rng(1)
    runs = []
    for cell, seed in itertools.product(range(4), range(seeds)):
        machine = machine_of(cell, seed)
        runs.append({"name": f"V{cell}", "lr_multiplier": 1.0, "seed": seed, "status": "ok",
                     "environment": {"device": machine},
                     "test_accuracy": 0.9 + 0.01 * cell - 0.002 * seed
                     + shift * (machine == "B") + rng.normal(0, noise)})
    return runs


def test_a_machine_shift_is_found_beside_cells_and_seeds_and_refused_where_confounded():
    """Half of each cell's seeds on machine B (which half differs by cell): the machine's
    planted +0.3 pp is recovered within its interval, apart from the cells' and seeds' own
    effects; where the machine is fixed by the seed (or there is one machine) it cannot be
    told apart, and there is no estimate."""
    from fmlab.report.report import machine_sentence
    from fmlab.stats.machines import machine_effect

    check = machine_effect(machine_runs(lambda cell, seed: "AB"[(seed + cell) % 2]))
    (effect,) = check["effects"]
    assert [m for m, _ in check["machines"]] in (["A", "B"], ["B", "A"])
    sign = 1 if check["machines"][0][0] == "A" else -1
    assert effect["low"] < sign * 0.003 < effect["high"] and effect["high"] - effect["low"] < 0.002
    assert check["p"] < 1e-6 and check["df"] == 16 - 4 - 3 - 1
    null = machine_effect(machine_runs(lambda cell, seed: "AB"[(seed + cell) % 2], shift=0.0))
    assert null["effects"][0]["low"] < 0 < null["effects"][0]["high"]
    assert "F test of the machine p = " in machine_sentence(machine_runs(
        lambda cell, seed: "AB"[(seed + cell) % 2]))
    assert machine_effect(machine_runs(lambda cell, seed: "AB"[seed >= 2])) is None
    assert machine_effect(machine_runs(lambda cell, seed: "A")) is None
    assert machine_sentence(machine_runs(lambda cell, seed: "A")) is None


def test_a_grid_still_running_its_seeds_says_how_many_each_variant_has():
    """While seeds 1-4 run, the report's 'mean over ...' must not claim every variant has all
    of them."""
    from fmlab.report.wording import seeds_phrase

    runs = [{"name": n, "seed": s} for n in "AB" for s in range(5)]
    assert seeds_phrase(runs) == "5 seeds"
    assert seeds_phrase(runs[:6]) == "1-5 seeds"  # A on 5 seeds, B on 1
    assert seeds_phrase(runs[:1]) == "1 seed"
