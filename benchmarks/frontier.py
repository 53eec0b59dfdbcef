"""The epoch frontier of a recipe: validation accuracy against the epoch budget.

For each budget N (6, 8, 10, 12 by default) the configuration is trained for N epochs on the
ablation's variants and seeds -- through benchmarks/ablation.py, so runs are the runner's
own, resumable and kept under --output-dir/<N>-epochs/ -- and the table sets every budget's
validation accuracy beside the reference runs (a grid folder: the 12-epoch grid of 2026-11-29,
kept in git history as docs/ at commit 4be691c). Validation only: the test set stays for the
final figures.

    git worktree add ../grid-12-epochs 4be691c
    python benchmarks/frontier.py --config lr_peak_x1.5 --runs-at 8=benchmarks/ablation-runs \\
        --baseline-flags "--adam-peak-lr 0.004 --sgd-peak-lr 0.05" \\
        --reference ../grid-12-epochs/docs --table benchmarks/frontier.md
"""

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

from ablation import finished_run, write_table  # benchmarks/ is on a script's path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = [("relu", "maxpool", "sgd"), ("relu", "maxpool", "adam")]  # the ablation's two


def budget_and_folder(text):
    """argparse type for --runs-at: N=FOLDER (an ablation output folder for N epochs)."""
    epochs, _, folder = text.partition("=")
    if not epochs.isdigit() or not folder:
        raise argparse.ArgumentTypeError(f"{text!r} is not N=FOLDER")
    return int(epochs), Path(folder)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", required=True, help="an ablation.py configuration (A+B+...)")
    p.add_argument("--epochs", type=int, nargs="+", default=[6, 8, 10, 12])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--baseline-flags", default="", metavar="'FLAGS'",
                   help="passed to ablation.py: runner flags that make its baseline")
    p.add_argument("--output-dir", type=Path, default=ROOT / "benchmarks" / "frontier-runs")
    p.add_argument("--runs-at", type=budget_and_folder, nargs="*", default=[], metavar="N=DIR",
                   help="take budget N's runs from this ablation folder instead (already run)")
    p.add_argument("--reference", type=Path, default=None,
                   help="a grid folder whose runs are a reference row (e.g. the 12-epoch "
                        "recipe's: docs/ at commit 4be691c)")
    p.add_argument("--table", type=Path, default=ROOT / "benchmarks" / "frontier.md")
    p.add_argument("--table-only", action="store_true", help="no training, only the table")
    return p.parse_args()


def folder_for(args, epochs):
    return dict(args.runs_at).get(epochs, args.output_dir / f"{epochs}-epochs")


def finished_ok(folder, variant, seed):
    run = finished_run(folder, variant, seed)
    return run if run and run["status"] == "ok" else None


def train(args, epochs):
    for variant in VARIANTS:
        command = [sys.executable, str(ROOT / "benchmarks" / "ablation.py"), "--epochs",
                   str(epochs), "--seeds", *map(str, args.seeds), "--variant", *variant,
                   "--configs", args.config, f"--baseline-flags={args.baseline_flags}",
                   "--output-dir", str(folder_for(args, epochs)),
                   "--table", str(folder_for(args, epochs) / f"{'_'.join(variant)}.md")]
        print("$", " ".join(command[1:]), flush=True)
        if subprocess.run(command).returncode != 0:
            sys.exit(f"error: {args.config} at {epochs} epochs failed")


def cell(found):
    return f"{100 * found['val_accuracy']:.2f}" if found else "–"


def table(args):
    lines = [f"Configuration `{args.config}`: validation accuracy (%) of the best epoch against "
             f"the epoch budget, seeds {', '.join(map(str, args.seeds))} (mean in bold); "
             + (f"reference: the runs in `{args.reference.name}/runs/` (the 12-epoch recipe); "
                if args.reference else "") +
             f"s/epoch: mean wall seconds per epoch on the machine as it was (a rough cost).",
             "", "| variant | epochs | " + " | ".join(f"seed {s}" for s in args.seeds) +
             " | mean | s/epoch |", "|---|---:|" + "---:|" * (len(args.seeds) + 2)]
    for variant in VARIANTS:
        rows = [(f"{epochs}", [finished_ok(folder_for(args, epochs) / args.config, variant, s)
                               for s in args.seeds]) for epochs in args.epochs]
        reference = [finished_ok(args.reference, variant, s) for s in args.seeds
                     ] if args.reference else [None]
        if all(reference):
            rows.append((f"{reference[0]['epochs_run']}, reference recipe", reference))
        name = next((f["name"] for _, found in rows for f in found if f), "/".join(variant))
        for label, found in rows:
            mean = (f"**{100 * statistics.mean(f['val_accuracy'] for f in found):.2f}**"
                    if all(found) else "(unfinished)")
            seconds = (f"{statistics.mean(f['train_seconds'] / f['epochs_run'] for f in found):.0f}"
                       if all(found) else "")
            lines.append(f"| {name} | {label} | " + " | ".join(map(cell, found)) +
                         f" | {mean} | {seconds} |")
    return "\n".join(lines) + "\n"


def main():
    args = parse_args()
    if not args.table_only:
        for epochs in args.epochs:
            train(args, epochs)
    write_table(args.table, table(args))


if __name__ == "__main__":
    main()
