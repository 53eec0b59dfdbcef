"""The peak rule on planted sweep curves: ties are ties, a spike next to a diverged run or at
the sweep's edge is never the peak, a sharp maximum is found, and a band that ends before a
diverged run is a lower bound."""

import pytest

from fmlab.stats import lr_tuning


def curve(*values, start=0.25):
    """[(multiplier, accuracy or None)] on a log2 grid from `start`."""
    return [(start * 2 ** i, v) for i, v in enumerate(values)]


SPIKE_BEFORE_DIVERGENCE = curve(0.940, 0.945, 0.946, 0.944, 0.950, None)  # x0.25 .. x8
RISING_TO_THE_EDGE = curve(0.930, 0.935, 0.940, 0.945, 0.950)             # best at x4, the edge


@pytest.mark.parametrize("rule", lr_tuning.PEAK_RULES)
def test_no_rule_picks_a_point_next_to_a_diverged_run_or_at_the_edge(rule):
    assert lr_tuning.best_point(SPIKE_BEFORE_DIVERGENCE, rule) not in (4.0, 8.0)
    assert lr_tuning.best_point(RISING_TO_THE_EDGE, rule) not in (0.25, 4.0)
    assert lr_tuning.argmax_point(SPIKE_BEFORE_DIVERGENCE) == 4.0  # what the argmax would take


def test_the_default_rule_reads_the_shape_near_the_top():
    # a plateau: every point ties; the recipe's own peak (x1) is kept
    assert lr_tuning.best_point(curve(0.945, 0.945, 0.945, 0.945, 0.945)) == 1.0
    # a single sharp maximum, off the recipe's peak
    assert lr_tuning.best_point(curve(0.90, 0.91, 0.92, 0.95, 0.92, 0.90)) == 2.0
    # two tied maxima with a dip between them: the middle of the two, not either by a hair
    assert lr_tuning.best_point(curve(0.930, 0.9452, 0.9440, 0.9450, 0.930)) == 1.0
    # the spike next to the diverged run: the parabola over x1 .. x4 peaks inside
    assert lr_tuning.best_point(SPIKE_BEFORE_DIVERGENCE) == 2.0
    # a cliff beyond the best point (x2) pulls the peak away from it, to x1
    assert lr_tuning.best_point(curve(0.950, 0.955, 0.958, 0.960, 0.900)) == 1.0
    assert lr_tuning.best_point(RISING_TO_THE_EDGE) == 2.0
    assert lr_tuning.best_point(curve(None, None, None)) is None


def test_a_sweep_too_short_for_the_rule_takes_its_best_point():
    assert lr_tuning.best_point(curve(0.90, 0.92)) == 0.5
    assert lr_tuning.best_point(curve(0.90, None, 0.92)) == 1.0


def test_a_band_that_ends_before_a_diverged_run_is_a_lower_bound():
    logs = [(-1.0, 0.940), (0.0, 0.945), (1.0, 0.943), (2.0, None)]
    (low, low_open), (high, high_open) = lr_tuning.band_edges(logs, 1, 0.004)
    assert low == pytest.approx(-0.8) and low_open is False
    assert high == 1.0 and high_open is True


def test_the_argmax_seeds_kept_beside_the_study_are_at_its_argmax_points(tmp_path):
    """benchmarks/peak-rule-runs holds the further seeds run at the sweep's argmax before the
    peak rule moved it: its check pairs each with the peak the rule chose on the committed
    sweep, at the variants where the two differ, and fails in one line without such seeds."""
    import subprocess
    import sys
    from pathlib import Path

    from benchmarks import peak_rule_check
    from fmlab.store import run_store

    root = Path(__file__).resolve().parents[1]
    study = root / "docs"
    result = peak_rule_check.check(study, root / "benchmarks" / "peak-rule-runs")
    curves = {name: lr_tuning.sweep_curve(points)
              for name, points in lr_tuning.by_variant(run_store.finished_runs(study)).items()}
    points = result["val_accuracy"]["points"]
    assert points and len(points) == len(result["test_accuracy"]["points"])
    for p in points:
        assert p["other"] == lr_tuning.argmax_point(curves[p["name"]]) != p["chosen"]
        assert p["chosen"] == lr_tuning.best_point(curves[p["name"]]) and 0 not in p["seeds"]
    table = tmp_path / "check.md"
    done = subprocess.run([sys.executable, "-m", "benchmarks.peak_rule_check", "--other",
                           str(study), "--table", str(table)], capture_output=True, text=True,
                          cwd=root, timeout=120)
    assert done.returncode == 2 and "no seed there also finished" in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not table.exists()
