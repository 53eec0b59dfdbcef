"""The epoch frontier of a recipe: accuracy against the epoch budget.

For each budget N the configuration is trained for N epochs on the ablation's variants and
seeds -- through benchmarks/ablation.py, so runs are the runner's own, resumable and kept
under --output-dir/<N>-epochs/ -- and the table gives every budget's validation accuracy per
seed and the training accuracy in inference mode (how far the model fits its training
images), the shortest budget within --tolerance of the best, and a figure of both.
Validation only: the test set stays for the final figures.

    python -m benchmarks.frontier --config baseline --epochs 8 12 16 24 32 \
        --output-dir benchmarks/plateau-runs --table benchmarks/plateau.md
    python -m benchmarks.frontier ... --table-only     # table and figure from finished runs

The 6-12 epoch frontier of benchmarks/frontier.md (2026-11-30) was made with
`--config lr_peak_x1.5 --runs-at 8=benchmarks/ablation-runs --baseline-flags
"--adam-peak-lr 0.004 --sgd-peak-lr 0.05" --epochs 6 8 10 12`.
"""

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np

from benchmarks.ablation import check_base_flags, config_name, finished_run, write_table
from fmlab.core.errors import Parser, positive_int

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = [("relu", "maxpool", "sgd"), ("relu", "maxpool", "adam")]  # the ablation's two


def budget_and_folder(text):
    """argparse type for --runs-at: N=FOLDER (an ablation output folder for N epochs)."""
    epochs, _, folder = text.partition("=")
    if not epochs.isdigit() or not folder:
        raise argparse.ArgumentTypeError(f"{text!r} is not N=FOLDER")
    return int(epochs), Path(folder)


def parse_args():
    p = Parser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", required=True, type=config_name,
                   help="an ablation.py configuration (A+B+...)")
    p.add_argument("--epochs", type=positive_int, nargs="+", default=[8, 12, 16, 24, 32])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--baseline-flags", default="", metavar="'FLAGS'",
                   help="passed to ablation.py: runner flags that make its baseline")
    p.add_argument("--output-dir", type=Path, default=ROOT / "benchmarks" / "frontier-runs")
    p.add_argument("--runs-at", type=budget_and_folder, nargs="*", default=[], metavar="N=DIR",
                   help="take budget N's runs from this folder instead (already run): an "
                        "ablation folder, or a runner output folder such as a grid's")
    p.add_argument("--reference", type=Path, default=None,
                   help="a grid folder whose runs are a reference row (e.g. the 12-epoch "
                        "recipe's: docs/ at commit 4be691c)")
    p.add_argument("--table", type=Path, default=ROOT / "benchmarks" / "frontier.md")
    p.add_argument("--figure", type=Path, default=None,
                   help="accuracy against the budget (default: the table's name, .png)")
    p.add_argument("--tolerance", type=float, default=0.2,
                   help="pp: the shortest budget whose mean validation accuracy is within "
                        "this of the best budget's is the suggested --epochs")
    p.add_argument("--table-only", action="store_true", help="no training, only the table")
    p.add_argument("--base-flags", nargs=argparse.REMAINDER, default=[],
                   help="more runner flags for every run (e.g. --precision mixed_bfloat16)")
    args = p.parse_args()
    check_base_flags(p, args.base_flags)
    args.figure = args.figure or args.table.with_suffix(".png")
    return args


def folder_for(args, epochs):
    return dict(args.runs_at).get(epochs, args.output_dir / f"{epochs}-epochs")


def runs_folder_for(args, epochs):
    """The runner output folder of a budget's runs: the configuration's folder inside an
    ablation folder, or a --runs-at folder that is a runner output folder itself (a grid)."""
    folder = folder_for(args, epochs)
    return folder / args.config if (folder / args.config).is_dir() else folder


def finished_ok(folder, variant, seed):
    run = finished_run(folder, variant, seed)
    return run if run and run["status"] == "ok" else None


def train(args, epochs):
    for variant in VARIANTS:
        command = [sys.executable, str(ROOT / "benchmarks" / "ablation.py"), "--epochs",
                   str(epochs), "--seeds", *map(str, args.seeds), "--variant", *variant,
                   "--configs", args.config, f"--baseline-flags={args.baseline_flags}",
                   "--output-dir", str(folder_for(args, epochs)),
                   "--table", str(folder_for(args, epochs) / f"{'_'.join(variant)}.md"),
                   "--base-flags", *args.base_flags]
        print("$", " ".join(command[1:]), flush=True)
        if subprocess.run(command).returncode != 0:
            sys.exit(f"error: {args.config} at {epochs} epochs failed")


def cell(found, key="val_accuracy"):
    return f"{100 * found[key]:.2f}" if found else "–"


def mean_of(found, key):
    """The mean over seeds, None where a run did not record it (older runs: no train
    accuracy in inference mode)."""
    values = [f.get(key) for f in found]
    return None if None in values else statistics.mean(values)


def percent(value):
    return "–" if value is None else f"{100 * value:.2f}"


def suggested_budget(args, rows_by_variant):
    """The shortest budget whose mean validation accuracy is within --tolerance pp of the best
    budget's, in every variant (None until every budget has all its seeds)."""
    chosen = []
    for rows in rows_by_variant.values():
        if not all(all(found) for _, found in rows):
            return None
        means = {epochs: mean_of(found, "val_accuracy") for epochs, found in rows}
        best = max(means.values())
        chosen.append(min(e for e, m in means.items() if m >= best - args.tolerance / 100))
    return max(chosen, default=None)


def finished_rows(args):
    """Per variant, every budget with its run per seed (None where not finished):
    {variant: [(epochs, [run or None per seed])]}."""
    return {variant: [(epochs, [finished_ok(runs_folder_for(args, epochs), variant, s)
                                for s in args.seeds]) for epochs in sorted(args.epochs)]
            for variant in VARIANTS}


def table(args, rows_by_variant, chosen):
    lines = [f"Configuration `{args.config}`: validation accuracy (%) of the best epoch against "
             f"the epoch budget (each budget its own runs, the schedule fitted to it), seeds "
             f"{', '.join(map(str, args.seeds))}; train (inference): accuracy on the training "
             f"images with dropout off and no augmentation, the mean over seeds -- how far the "
             f"model fits what it trains on; " +
             (f"reference: the runs in `{args.reference.name}/runs/`; " if args.reference else "") +
             "s/epoch: mean wall seconds per epoch on the machine as it was (a rough cost); "
             "means only where every seed has finished.",
             "", "| variant | epochs | " + " | ".join(f"seed {s}" for s in args.seeds) +
             " | mean | train (inference) | s/epoch |", "|---|---:|" + "---:|" * (len(args.seeds) + 3)]
    for variant in VARIANTS:
        rows = [(str(e), found) for e, found in rows_by_variant[variant]]
        reference = [finished_ok(args.reference, variant, s) for s in args.seeds
                     ] if args.reference else [None]
        if all(reference):
            rows.append((f"{reference[0]['epochs_run']}, reference recipe", reference))
        name = next((f["name"] for _, found in rows for f in found if f), "/".join(variant))
        for label, found in rows:
            cells = " | ".join(map(cell, found))
            if not all(found):
                lines.append(f"| {name} | {label} | {cells} | (unfinished) | | |")
                continue
            seconds = statistics.mean(f["train_seconds"] / f["epochs_run"] for f in found)
            lines.append(f"| {name} | {label} | {cells}"
                         f" | **{100 * mean_of(found, 'val_accuracy'):.2f}** | "
                         f"{percent(mean_of(found, 'train_eval_accuracy'))} | {seconds:.0f} |")
    if chosen:
        lines += ["", f"The shortest budget within {args.tolerance:g} pp of the best budget's mean "
                      f"validation accuracy, in both variants: **{chosen} epochs**" +
                      (" -- the longest measured: the plateau may lie beyond it." if
                       chosen == max(args.epochs) else ".")]
    return "\n".join(lines) + "\n"


def draw(args, rows_by_variant, chosen):
    """The figure from every finished run (a budget's mean over the seeds finished so far)."""
    from fmlab.figures.plots import plot_frontier  # here: matplotlib only when drawing

    curves = []
    for rows in rows_by_variant.values():
        runs = [(epochs, f) for epochs, found in rows for f in found if f]
        if runs:
            points = [(epochs, f["val_accuracy"], f.get("train_eval_accuracy", np.nan))
                      for epochs, f in runs]
            curves.append((runs[0][1], runs[0][1]["name"], points))
    if curves:
        plot_frontier(curves, args.figure, chosen=chosen, tolerance=args.tolerance / 100)


def main():
    args = parse_args()
    if not args.table_only:
        for epochs in args.epochs:
            train(args, epochs)
    rows = finished_rows(args)
    chosen = suggested_budget(args, rows)
    write_table(args.table, table(args, rows, chosen))
    draw(args, rows, chosen)


if __name__ == "__main__":
    main()
