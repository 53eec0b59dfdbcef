"""Ablation of the training techniques at a fixed budget: validation accuracy per technique.

Each configuration is the runner's default command plus one technique (label smoothing,
weight averaging, small translations, a higher learning-rate peak), trained on the weakest
variant (CNN_ReLU_MaxPool_Adam by default) for the same number of epochs and seeds. The
table compares validation accuracy only -- the test set stays for the final figures --
with each configuration's difference to the baseline paired by seed (same split, same
initialisation). Test-time flip averaging needs no training: it is measured on the
baseline's own checkpoints, with and without the mirrored views.

Runs go through the runner itself (one process per run, interleaved seed by seed), so a
killed ablation resumes where it stopped and every row is what the CLI would produce.

    python -m benchmarks.ablation                         # defaults below, ~1 h on 2 cores
    python -m benchmarks.ablation --epochs 3 --seeds 0 1 --configs baseline translate_2px
    python -m benchmarks.ablation --table-only            # rebuild the table from finished runs
    python -m benchmarks.ablation --configs baseline lr_peak_x1.5+warmup_0.3   # a combination
"""

import argparse
import json
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
from fmlab.core.errors import Parser, positive_int  # noqa: E402
from fmlab.core.levels import LEVELS, variant_name  # noqa: E402
from fmlab.store.run_store import metrics_paths, run_dir  # noqa: E402  (no TensorFlow: the orchestrator stays light)
# The baseline is the runner's default recipe, plus --baseline-flags. The tables in
# benchmarks/README.md were made with the defaults of their day: the 6-epoch table of
# 2026-11-29 with `--baseline-flags "--adam-peak-lr 0.002"`, the 8-epoch tables of
# 2026-11-30 with `--baseline-flags "--adam-peak-lr 0.004 --sgd-peak-lr 0.05"`.
CONFIGS = {  # name -> runner flags added to the baseline
    "baseline": [],
    "label_smoothing_0.1": ["--label-smoothing", "0.1"],   # Szegedy et al. 2016
    "ema_0.998": ["--ema", "0.998"],                      # Polyak & Juditsky 1992
    "translate_2px": ["--translate", "2"],                # shifts beside the flips
    "random_erasing_0.5": ["--random-erasing", "0.5"],    # Zhong et al. 2020 (their p = 0.5)
    "lr_peak_x2": ["--lr-scale", "2"],                    # peak 4e-3 (AdamW), 0.1 (SGD)
    "batch_64": ["--batch-size", "64"],                   # twice the updates per epoch
    # AdamW's decay at the value of common recipes (DeiT, ConvNeXt: 0.05) instead of 1e-4;
    # Loshchilov & Hutter 2019; with batch norm it keeps the effective learning rate up
    # (van Laarhoven 2017)
    "adamw_wd_0.05": ["--adamw-weight-decay", "0.05"],
    # Fewer epochs (airbench, Jordan 2024; Page's "How to train your ResNet"): each alone
    "dirac_init": ["--dirac-init"],                       # identity init of conv2 and conv4
    "no_bn_scale": ["--no-bn-scale"],                     # frozen batch norm scales
    "lookahead_5": ["--lookahead", "5"],                  # Zhang et al. 2019, alpha 0.5
    "alternating_flips": ["--alternating-flips"],         # every image mirrored every other epoch
    "warmup_0.3": ["--warmup-epochs", "0.3"],             # a shorter warm-up
    "lr_peak_x1.5": ["--lr-scale", "1.5"],                # a higher peak for both optimizers
}


def config_name(text):
    """A configuration, or several joined by '+' (their flags together): argparse type."""
    unknown = [part for part in text.split("+") if part not in CONFIGS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown configuration {unknown[0]!r} (choose from "
                                         f"{', '.join(CONFIGS)}, or join several with '+')")
    return text


def check_variant(parser, levels):
    """The (activation, downsampling, optimizer) levels exist, before anything trains."""
    for (factor, known), level in zip(LEVELS.items(), levels):
        if level not in known:
            parser.error(f"unknown {factor} {level!r} (choose from {', '.join(known)})")


def flags_of(config):
    return [flag for part in config.split("+") for flag in CONFIGS[part]]


# Flags this script (and frontier.py) pass to the runner themselves. --base-flags takes the
# rest of the command line, so one of these written after it would reach the runner as a
# base flag and silently override the budget or the folder: refused.
OWN_FLAGS = ("--epochs", "--seeds", "--seed", "--output-dir", "--activation", "--downsampling",
             "--optimizer")


def check_base_flags(parser, base_flags):
    owned = [flag for flag in base_flags if flag.split("=")[0] in OWN_FLAGS]
    if owned:
        parser.error(f"--base-flags took {owned[0]}, which this script sets itself: "
                     f"write {owned[0]} before --base-flags")


def parse_args():
    p = Parser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--configs", nargs="+", type=config_name, default=list(CONFIGS),
                   help=f"from {', '.join(CONFIGS)}; A+B combines two")
    p.add_argument("--epochs", type=positive_int, default=6, help="the fixed budget of every run")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--variant", nargs=3, default=["relu", "maxpool", "adam"],
                   metavar=("ACTIVATION", "DOWNSAMPLING", "OPTIMIZER"))
    p.add_argument("--baseline-flags", default="", metavar="'FLAGS'",
                   help="runner flags, in one quoted string, that make the baseline (default: "
                        "none, the runner's own defaults)")
    p.add_argument("--base-flags", nargs=argparse.REMAINDER, default=[],
                   help="more runner flags for every configuration (e.g. --subset 4000)")
    p.add_argument("--output-dir", type=Path, default=ROOT / "results-ablation")
    p.add_argument("--table", type=Path, default=ROOT / "benchmarks" / "ablation.md")
    p.add_argument("--table-only", action="store_true", help="no training, only the table")
    args = p.parse_args()
    check_base_flags(p, args.base_flags)
    check_variant(p, args.variant)
    return args


def runner_command(args, config, seed):
    activation, downsampling, optimizer = args.variant
    return [sys.executable, str(ROOT / "fashion_mnist_cnn.py"), "--activation", activation,
            "--downsampling", downsampling, "--optimizer", optimizer, "--epochs", str(args.epochs),
            "--seeds", str(seed), "--shift-images", "500", "--output-dir",
            str(args.output_dir / config), "--no-report", *shlex.split(args.baseline_flags), *flags_of(config),
            *args.base_flags]


def finished(args, config, seed):
    return finished_run(args.output_dir / config, args.variant, seed)


def finished_run(folder, variant, seed):
    """The finished run (at the recipe's own peak) of this variant and seed in a runner output
    folder, or None (several variants may share a folder)."""
    wanted = dict(zip(("activation", "downsampling", "optimizer"), variant))
    for path in metrics_paths(folder, seed):
        run = json.loads(path.read_text())
        if all(run[factor] == level for factor, level in wanted.items()) \
                and run.get("lr_multiplier", 1.0) == 1.0:
            return {**run, "run_dir": path.parent}
    return None


def flip_tta_accuracies(args, seed, run, translate=0):
    """Validation accuracy of a finished run's checkpoint without and with flip averaging
    (and, with translate, shifted views too)."""
    import keras  # here: the orchestrator itself needs no TensorFlow

    from fmlab.run.data import prepare_data
    from fmlab.run.training import predict

    settings = run["settings"]
    x_val, y_val = prepare_data(None, settings["subset"], settings["val_fraction"], seed)["val"]
    model = keras.models.load_model(Path(run["run_dir"]) / "model.keras")
    plain = predict(model, x_val, 512, tta=False).argmax(axis=1)
    flipped = predict(model, x_val, 512, tta=True, translate=translate).argmax(axis=1)
    return float((plain == y_val).mean()), float((flipped == y_val).mean())


def pp(x):
    return f"{100 * x:+.2f}"


def table(args):
    """Markdown: per configuration the validation accuracy per seed, mean, paired difference
    to the baseline, and mean seconds per epoch (a side-by-side cost, not a benchmark)."""
    seeds = args.seeds
    lines = [f"Variant {'/'.join(args.variant)}, {args.epochs} epochs (fixed budget), seeds "
             f"{', '.join(map(str, seeds))}; validation accuracy (%) of the best epoch; "
             f"Δ = mean paired difference to the baseline in percentage points (per-seed "
             f"differences in brackets); s/epoch: mean wall seconds per epoch, including "
             f"whatever else ran on the shared machine at the time (a rough cost, not a "
             f"benchmark).", "",
             "| configuration | " + " | ".join(f"seed {s}" for s in seeds) +
             " | mean | Δ vs baseline | s/epoch |",
             "|---|" + "---:|" * (len(seeds) + 3)]
    base = {s: finished(args, "baseline", s) for s in seeds}
    for config in args.configs:
        runs = {s: finished(args, config, s) for s in seeds}
        if not all(r and r["status"] == "ok" for r in runs.values()):
            # a seed without a run folder was not run (a screen may stop a technique early)
            started = any(not r and run_dir(args.output_dir / config, variant_name(
                args.variant), s).exists() for s, r in runs.items())
            lines.append(f"| {config} | " + " | ".join(
                f"{100 * r['val_accuracy']:.2f}" if r and r["status"] == "ok" else "–"
                for r in runs.values()) + (" | (unfinished) | | |" if started else
                                           " | (not run) | | |"))
            continue
        accs = [runs[s]["val_accuracy"] for s in seeds]
        seconds = statistics.mean(r["train_seconds"] / r["epochs_run"] for r in runs.values())
        delta = ""
        if config != "baseline" and all(base[s] and base[s]["status"] == "ok" for s in seeds):
            diffs = [runs[s]["val_accuracy"] - base[s]["val_accuracy"] for s in seeds]
            delta = f"{pp(statistics.mean(diffs))} ({', '.join(pp(d) for d in diffs)})"
        lines.append(f"| {config} | " + " | ".join(f"{100 * a:.2f}" for a in accs) +
                     f" | {100 * statistics.mean(accs):.2f} | {delta} | {seconds:.0f} |")
    earlier = args.table.read_text().splitlines() if args.table.exists() else []
    for translate, what in ((0, "flip TTA"), (1, "flip + 1-px translation TTA")):
        if not all(base[s] and base[s]["status"] == "ok" for s in seeds):
            break
        row = f"| baseline checkpoints + {what} at evaluation |"
        if not all((Path(base[s]["run_dir"]) / "model.keras").exists() for s in seeds):
            # saved models stay out of git: a checkout without them keeps the row it has
            # for the same runs (same first line: variant, budget, seeds), else says why
            kept = [line for line in earlier if line.startswith(row)]
            lines += kept if kept and earlier[0] == lines[0] else [
                row + " (needs the baseline's saved models) | " + "| " * (len(seeds) + 2)]
            continue
        plain, flipped = zip(*(flip_tta_accuracies(args, s, base[s], translate) for s in seeds))
        diffs = [f - p for p, f in zip(plain, flipped)]
        lines.append(f"{row} " +
                     " | ".join(f"{100 * a:.2f}" for a in flipped) +
                     f" | {100 * statistics.mean(flipped):.2f} | "
                     f"{pp(statistics.mean(diffs))} ({', '.join(pp(d) for d in diffs)}) vs the "
                     f"same checkpoints without | – |")
    return "\n".join(lines) + "\n"


def main():
    args = parse_args()
    if not args.table_only:
        for seed in args.seeds:  # seed-major: every configuration sees the same minutes' mix
            for config in args.configs:
                if finished(args, config, seed):
                    continue
                command = runner_command(args, config, seed)
                print("$", " ".join(command[1:]), flush=True)
                result = subprocess.run(command)
                if result.returncode != 0:
                    sys.exit(f"error: {config} seed {seed} exited {result.returncode}")
    write_table(args.table, table(args))


def write_table(path, text):
    """Write the Markdown table atomically (a kill never leaves half a table) and show it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(text)
    temporary.replace(path)
    print(text)


if __name__ == "__main__":
    main()
