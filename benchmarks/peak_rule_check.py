"""Does the peak rule's choice hold on seeds that did not make it?

docs/ chose each variant's learning rate by its seed-0 sweep: by the sweep's argmax under the
protocol of 2026-12-02, by the peak rule (a parabola over the points near the best) under
that of 2026-12-07, which moved six of the eight peaks. Seeds 1-4 trained at both choices;
the study keeps the rule's (one peak per variant), the argmax's live in
benchmarks/peak-rule-runs, outside every comparison. Seed 0 made both choices, seeds 1-4
neither, so their accuracy at the rule's peak minus at the argmax's is an out-of-sample
check of the move: on validation (what chooses) and on test (what the choice is for).

    python -m benchmarks.peak_rule_check          # docs/ + benchmarks/peak-rule-runs -> peak_rule_check.md
    python -m benchmarks.peak_rule_check --study DIR --other DIR --table FILE
"""

import argparse
from pathlib import Path

from fmlab.core.errors import Parser, UsageError
from fmlab.store import run_store
from fmlab.store.layout import atomic_write
from fmlab.stats import lr_tuning

ROOT = Path(__file__).resolve().parents[1]
MEASURES = {"val_accuracy": "validation", "test_accuracy": "test"}


def shown(path):
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def check(study, other):
    """{measure: lr_tuning.off_peak_seeds(...)} over the runs of both folders (the study's
    sweeps decide the chosen peaks)."""
    runs = run_store.merged_runs([study, other])
    return {m: lr_tuning.off_peak_seeds(runs, measure=m) for m in MEASURES}


def summary(result):
    """One sentence per measure: the mean difference, its interval over the variants and how
    often the rule's peak leads."""
    parts = []
    for measure, word in MEASURES.items():
        c = result[measure]
        interval = "" if c["low"] is None else (f" [{100 * c['low']:+.2f}, {100 * c['high']:+.2f}] "
                                                f"(95% t interval over the {len(c['points'])} variants)")
        parts.append(f"{word} {100 * c['difference']:+.2f} pp{interval}, the rule's peak ahead "
                     f"in {c['ahead']} of {len(c['points'])}")
    return "Mean of the differences: " + "; ".join(parts) + "."


def table(result):
    val, test = result["val_accuracy"]["points"], result["test_accuracy"]["points"]
    lines = ["| variant | rule's peak | other point | seeds | validation at the rule's peak / "
             "the other (%) | difference (pp) | test at the rule's peak / the other (%) "
             "| difference (pp) |", "|---|---:|---:|---|---|---:|---|---:|"]
    for v, t in zip(val, test):
        lines.append(f"| {v['name']} | x{v['chosen']:g} | x{v['other']:g} | "
                     f"{', '.join(map(str, v['seeds']))} | {100 * v['at_chosen']:.2f} / "
                     f"{100 * v['at_other']:.2f} | {100 * (v['at_chosen'] - v['at_other']):+.2f} | "
                     f"{100 * t['at_chosen']:.2f} / {100 * t['at_other']:.2f} | "
                     f"{100 * (t['at_chosen'] - t['at_other']):+.2f} |")
    return "\n".join(lines)


def main():
    p = Parser(description=__doc__.split("\n\n")[0],
               formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--study", type=Path, default=ROOT / "docs", help="the study folder")
    p.add_argument("--other", type=Path, default=ROOT / "benchmarks" / "peak-rule-runs",
                   help="further seeds at points the study did not choose")
    p.add_argument("--table", type=Path, default=ROOT / "benchmarks" / "peak_rule_check.md")
    args = p.parse_args()
    try:
        result = check(args.study, args.other)
    except UsageError as error:
        p.error(str(error))
    if result["val_accuracy"] is None:
        p.error(f"{args.other}: no seed there also finished at a chosen peak of {args.study}")
    text = (f"# The peak rule on seeds that chose nothing\n\n`python -m benchmarks.peak_rule_check "
            f"--study {shown(args.study)} --other {shown(args.other)}`: each variant's seeds "
            f"that finished both at the peak the rule chose on the study's sweep and at the "
            f"point in `{shown(args.other)}` (mean over those seeds; the sweep's seed is never "
            f"one of them). In `benchmarks/peak-rule-runs` the other point is the sweep's "
            f"argmax, the peak of the protocol of 2026-12-02.\n\n" + table(result) + "\n\n" + summary(result) + "\n")
    atomic_write(args.table, text)
    print(text)


if __name__ == "__main__":
    main()
