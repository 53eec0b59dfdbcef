"""Accuracy parity of bfloat16 and float32: the same recipe, seed and split in both precisions.

Each (variant, seed) is trained through the runner once with `--precision mixed_bfloat16`
(bfloat16 compute, float32 master weights and softmax) and once with `--precision float32`,
each precision in a folder of its own under --output-dir, seed-major so both precisions see
the same minutes of the shared machine. The table pairs the two by variant and seed
(same split, same initialisation) and gives the mean difference in validation accuracy with
its 95% t interval; the test set is not looked at. `--float32-runs DIR` takes the float32
side from a finished grid of the same recipe instead of training it (its runs at lr x1).

    python -m benchmarks.parity                                  # 2 variants x 2 seeds
    python -m benchmarks.parity --float32-runs docs              # float32 from a grid
    python -m benchmarks.parity --float32-runs docs \\
        --bfloat16-runs benchmarks/plateau-runs/8-epochs/baseline   # shared with the frontier
    python -m benchmarks.parity --table-only
"""

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

from scipy import stats

from benchmarks.ablation import check_variant, finished_run, write_table
from fmlab.core.errors import Parser

ROOT = Path(__file__).resolve().parents[1]
PRECISIONS = {"bfloat16": "mixed_bfloat16", "float32": "float32"}  # folder -> --precision
VARIANTS = [("relu", "maxpool", "adam"), ("relu", "maxpool", "sgd")]


def parse_args():
    p = Parser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--variants", nargs="+", default=[",".join(v) for v in VARIANTS],
                   metavar="A,D,O", help="activation,downsampling,optimizer")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--output-dir", type=Path, default=ROOT / "benchmarks" / "parity-runs")
    p.add_argument("--float32-runs", type=Path, default=None, metavar="DIR",
                   help="a finished grid of the same recipe in float32, instead of training it")
    p.add_argument("--bfloat16-runs", type=Path, default=None, metavar="DIR",
                   help="the folder of the bfloat16 runs (default: OUTPUT_DIR/bfloat16); the "
                        "frontier's 8-epoch baseline folder lets both share them")
    p.add_argument("--runner-flags", nargs=argparse.REMAINDER, default=[],
                   help="more runner flags for every run (the recipe stays the default's)")
    p.add_argument("--table", type=Path, default=ROOT / "benchmarks" / "parity.md")
    p.add_argument("--table-only", action="store_true", help="no training, only the table")
    args = p.parse_args()
    args.variants = [tuple(v.split(",")) for v in args.variants]
    for variant in args.variants:
        if len(variant) != 3:
            p.error(f"--variants: {','.join(variant)!r} is not ACTIVATION,DOWNSAMPLING,OPTIMIZER")
        check_variant(p, variant)
    if args.float32_runs and not args.table_only:  # checked before anything trains
        missing = [f"{'/'.join(v)} seed {s}" for s in args.seeds for v in args.variants
                   if not finished_run(args.float32_runs, v, s)]
        if missing:
            p.error(f"--float32-runs {args.float32_runs} has no finished {missing[0]}"
                    + (f" (nor {len(missing) - 1} more)" if len(missing) > 1 else ""))
    return args


def folder_of(args, precision):
    if precision == "float32" and args.float32_runs:
        return args.float32_runs
    if precision == "bfloat16" and args.bfloat16_runs:
        return args.bfloat16_runs
    return args.output_dir / precision


def train(args):
    for seed in args.seeds:
        for variant in args.variants:
            for precision, policy in PRECISIONS.items():
                if finished_run(folder_of(args, precision), variant, seed):
                    continue
                activation, downsampling, optimizer = variant
                command = [sys.executable, str(ROOT / "fashion_mnist_cnn.py"),
                           "--activation", activation, "--downsampling", downsampling,
                           "--optimizer", optimizer, "--seeds", str(seed), "--precision", policy,
                           "--no-report", "--output-dir", str(folder_of(args, precision)),
                           *args.runner_flags]
                print("$", " ".join(command[1:]), flush=True)
                if subprocess.run(command).returncode != 0:
                    sys.exit(f"error: {'/'.join(variant)} seed {seed} in {precision} failed")


def table(args):
    """Markdown: validation accuracy per (variant, seed) in both precisions, the paired
    difference, and the mean difference with its 95% t interval over all pairs."""
    lines = ["Validation accuracy (%) of the best epoch, the runner's default recipe; "
             "Δ = bfloat16 minus float32 in percentage points, paired by variant and seed "
             "(same split and initialisation); s/epoch: mean wall seconds per epoch of each "
             "run on the machine as it was (a rough cost; `throughput.py` measures speed).", "",
             "| variant | seed | float32 | bfloat16 | Δ (pp) | s/epoch float32 | s/epoch bfloat16 |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    if args.float32_runs:
        lines[0] += (f" The float32 runs are the grid in `{args.float32_runs.as_posix()}` (same "
                     "recipe), trained on other days and machines: compare their s/epoch with care.")
    diffs = []
    for variant in args.variants:
        for seed in args.seeds:
            runs = {p: finished_run(folder_of(args, p), variant, seed) for p in PRECISIONS}
            if not all(r and r["status"] == "ok" for r in runs.values()):
                lines.append(f"| {'/'.join(variant)} | {seed} | (unfinished) | | | | |")
                continue
            f32, bf16 = runs["float32"], runs["bfloat16"]
            assert f32["settings"]["precision"] == "float32"
            assert bf16["settings"]["precision"] == "mixed_bfloat16"
            diff = bf16["val_accuracy"] - f32["val_accuracy"]
            diffs.append(diff)
            lines.append(f"| {f32['name']} | {seed} | {100 * f32['val_accuracy']:.2f} | "
                         f"{100 * bf16['val_accuracy']:.2f} | {100 * diff:+.2f} | "
                         f"{f32['train_seconds'] / f32['epochs_run']:.0f} | "
                         f"{bf16['train_seconds'] / bf16['epochs_run']:.0f} |")
    if len(diffs) >= 2:
        mean, se = statistics.mean(diffs), statistics.stdev(diffs) / len(diffs) ** 0.5
        half = stats.t.ppf(0.975, len(diffs) - 1) * se
        lines += ["", f"Mean Δ (bfloat16 - float32) over {len(diffs)} pairs: "
                      f"**{100 * mean:+.2f} pp**, 95% t interval [{100 * (mean - half):+.2f}, "
                      f"{100 * (mean + half):+.2f}] pp (sd of the differences "
                      f"{100 * statistics.stdev(diffs):.2f} pp)."]
    return "\n".join(lines) + "\n"


def main():
    args = parse_args()
    if not args.table_only:
        train(args)
    write_table(args.table, table(args))


if __name__ == "__main__":
    main()
