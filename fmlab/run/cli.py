"""The command line: every flag (the recipe's built from its fields), checked in one place.

    args = parse_args(argv, doc)     # doc: the entry point's docstring (description, examples)

A bad value exits 2 with one line (argparse's error); nothing here imports TensorFlow, so
--help answers at once.
"""

import argparse
import dataclasses
import math
import sys
from pathlib import Path

from fmlab.core.errors import Parser, positive_int
from fmlab.core.levels import FACTORS, LEVELS, MODEL_PARTS, register_setting_factor
from fmlab.run.recipe import QUICK, Recipe, flag_of
from fmlab.stats import lr_tuning
from fmlab.store import run_store

QUICK_OUTPUT_DIR = Path("results-quick")  # --quick runs never mix with real ones

class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Defaults in the help where they say something: not for switches (True/False), not
    for None (the help says what happens then), not twice where the help already says it."""

    def _get_help_string(self, action):
        if action.default is None or isinstance(action.default, bool) or "default" in action.help:
            return action.help
        return super()._get_help_string(action)


def build_parser(doc):
    """The parser; doc: the entry point's docstring (its first paragraph describes, its third
    lists examples)."""
    p = Parser(description=doc.split("\n\n")[0], formatter_class=HelpFormatter,
               epilog="examples:\n" + doc.split("\n\n")[2])
    grid = p.add_argument_group("the grid")
    for factor, levels in FACTORS.items():  # the seed's levels by default, any registered one
        grid.add_argument(f"--{factor}", nargs="+", choices=list(LEVELS[factor]),
                          default=list(levels), help=f"{factor} levels to include in the grid")
    grid.add_argument("--factor", action="append", default=[], metavar="NAME=LEVEL,LEVEL",
                      help="one more factor of the design, repeatable: any recipe setting by "
                           "its name (--factor epochs=8,32, --factor batch_size=64,128, "
                           "--factor label_smoothing=0,0.1) or a model part ("
                           + "; ".join(f"{f}: {', '.join(levels)}" for f, levels in MODEL_PARTS.items())
                           + "); the grid is the product of every factor's levels, and a level "
                           "away from the default adds a suffix to the variant's name")
    grid.add_argument("--seeds", type=int, nargs="+", default=None, metavar="S",
                      help="repeat every variant once per seed; each seed fixes its run's data "
                           "split, initialisation and shuffling (default: 0)")
    grid.add_argument("--seed", type=int, default=None, help="one seed: same as --seeds S")
    grid.add_argument("--lr-scales", type=float, nargs="+", default=None, metavar="M",
                      help="the learning-rate axis: every variant and seed once per multiple M "
                           "of its optimizer's peak (after --peak-lr-factor); M other than 1 gets "
                           "its own run folder, and the report compares each variant at its "
                           "M with the best validation accuracy (default: 1)")
    grid.add_argument("--tune-lr", action="store_true",
                      help="tune each variant's peak by the same rule, then compare: the "
                           "--lr-scales sweep (default: "
                           f"{' '.join(f'{m:g}' for m in lr_tuning.DEFAULT_SWEEP)}) on the first "
                           "seed, extended by a doubling on each side while that side is "
                           f"within {100 * lr_tuning.TUNING_BAND:g} pp of the best validation "
                           f"accuracy (up to x1/{lr_tuning.MAX_MULTIPLIER} and "
                           f"x{lr_tuning.MAX_MULTIPLIER}), then the other seeds at each "
                           "variant's best multiplier")
    grid.add_argument("--wide-sweep", nargs="+", default=None, metavar="VARIANT",
                      help="with --tune-lr: only these variants' sweeps grow beyond --lr-scales "
                           "(names as --list-variants prints them), the others keep those "
                           "points; recorded in OUTPUT_DIR/tuning.json, so a resumed study "
                           "keeps it (default: every variant)")

    recipe = p.add_argument_group("the recipe (stored with every run as settings.json)")
    techniques = p.add_argument_group("training techniques, off by default (stored likewise; "
                                      "benchmarks/ablation.py measures them)")
    for field in dataclasses.fields(Recipe):
        cli = dict(field.metadata["cli"])
        if cli.pop("flag", "") is None:  # set by another flag (set_by)
            continue
        group = techniques if field.metadata["technique"] else recipe
        group.add_argument(flag_of(field), dest=field.name,
                           default=cli.pop("cli_default", field.default),
                           help=field.metadata["help"], **cli)
    recipe.add_argument("--lr-scale", dest="peak_lr_factor", type=float, default=argparse.SUPPRESS,
                        help=argparse.SUPPRESS)  # the old name of --peak-lr-factor
    recipe.add_argument("--scale-with-replicas", action="store_true",
                        help="multiply batch size and peak learning rate by the number of "
                             "replicas (linear scaling: faster, but another experiment than on "
                             "one device)")

    run = p.add_argument_group("where and how it runs")
    run.add_argument("--quick", action="store_true",
                     help="a few-minute smoke check of the pipeline with the same outputs "
                          "(4,000 training images, 3 epochs, batch 32, shifts of 2,000 test "
                          f"images) in {QUICK_OUTPUT_DIR}/")
    run.add_argument("--data-dir", type=Path, default=None, help="folder with the four IDX files")
    run.add_argument("--output-dir", type=Path, default=Path("results"),
                     help=f"where results go (--quick: {QUICK_OUTPUT_DIR})")
    run.add_argument("--fresh", action="store_true", help="retrain runs that already finished")
    run.add_argument("--deterministic", action="store_true",
                     help="TensorFlow op determinism: bit-identical reruns, somewhat slower")
    run.add_argument("--no-report", dest="report", action="store_false",
                     help="train and write the results table only; draw the figures and the "
                          "report later with --report-only (what every shard does)")
    run.add_argument("--list-variants", action="store_true",
                     help="print the selected variants and their parameter counts, train nothing")
    run.add_argument("--dry-run", action="store_true",
                     help="print the runs this command would train now, resume or skip, and "
                          "the time they would take at the folder's mean so far; train nothing")
    run.add_argument("--report-only", nargs="*", type=Path, default=None, metavar="DIR",
                     help="no training: rebuild tables and figures from the finished runs of "
                          "the DIRs (default: --output-dir) into --output-dir")
    run.add_argument("--shard", type=run_store.parse_shard, default=None, metavar="I/N",
                     help="run only slice I (0 to N-1) of N disjoint slices of the (variant, "
                          "seed, learning-rate multiplier) runs; default: from SLURM_ARRAY_TASK_* or "
                          "JOB_COMPLETION_INDEX")
    run.add_argument("--shard-count", type=positive_int, default=None, metavar="N",
                     help="number of slices when the index comes from JOB_COMPLETION_INDEX "
                          "(Kubernetes Indexed Job)")
    run.add_argument("--distribute", choices=["auto", "none", "mirrored"], default="auto",
                     help="mirrored: one run across the visible GPUs (tf.distribute."
                          "MirroredStrategy), the global batch --batch-size split between "
                          "them; auto: mirrored when >1 GPU")
    run.add_argument("--logical-cpus", type=positive_int, default=None, metavar="N",
                     help=argparse.SUPPRESS)  # testing aid: split the CPU into N devices to mirror on
    return p


def parse_args(argv, doc):
    """The command line, checked: a bad value exits 2 with one line (argparse's error)."""
    p = build_parser(doc)
    preset = argparse.ArgumentParser(add_help=False)
    preset.add_argument("--quick", action="store_true")
    if preset.parse_known_args(argv)[0].quick:  # a preset is just other defaults
        p.set_defaults(**QUICK, output_dir=QUICK_OUTPUT_DIR)
    args = p.parse_args(argv)
    if args.seed is not None and args.seeds is not None:
        p.error("give --seed or --seeds, not both")
    args.seeds = [args.seed] if args.seed is not None else args.seeds or [0]
    if len(set(args.seeds)) != len(args.seeds):
        p.error(f"--seeds repeats a seed: {args.seeds}")
    if not all(0 <= s < 2**32 for s in args.seeds):  # NumPy's and scikit-learn's seed range
        p.error(f"--seeds must be whole numbers from 0 to {2**32 - 1}: "
                f"{' '.join(map(str, args.seeds))}")
    scales = args.lr_scales or (list(lr_tuning.DEFAULT_SWEEP) if args.tune_lr else [1.0])
    if min(scales) <= 0 or not all(map(math.isfinite, scales)):
        p.error(f"--lr-scales must be positive numbers: {' '.join(f'{m:g}' for m in scales)}")
    if len(set(scales)) != len(scales):
        p.error(f"--lr-scales repeats a multiplier: {' '.join(f'{m:g}' for m in scales)}")
    if args.tune_lr and len(scales) < 2:
        p.error("--tune-lr needs at least two --lr-scales to sweep")
    if args.wide_sweep and not args.tune_lr:
        p.error("--wide-sweep chooses which sweeps of --tune-lr grow: add --tune-lr")
    if args.tune_lr and args.shard:  # (with --report-only it only reports: nothing to decide)
        p.error("--tune-lr decides its next runs from the finished ones, in one process: "
                "give it no --shard (on a cluster, run each stage with --lr-scales)")
    args.lr_scales = scales
    try:
        # every setting checked once, here, before anything starts (auto resolves later, when
        # a run needs it: checking needs no TensorFlow)
        recipe = Recipe.from_args(args, precision="float32" if args.precision == "auto" else None)
        args.factors = parse_factors(args.factor, argv if argv is not None else sys.argv[1:], recipe)
    except ValueError as e:
        p.error(str(e))
    if args.report_only is not None and args.dry_run:
        p.error("--report-only trains nothing: --dry-run has nothing to show")
    if args.report_only is not None and not args.report:
        p.error("--report-only and --no-report ask for nothing to be done")
    if args.output_dir.exists() and not args.output_dir.is_dir():
        p.error(f"--output-dir {args.output_dir} is a file, not a folder")
    return args


BOOLEAN_WORDS = {"true": True, "on": True, "yes": True, "1": True,
                 "false": False, "off": False, "no": False, "0": False}


def parse_factors(specs, argv, recipe):
    """{factor: [level names]} of the --factor NAME=LEVEL,LEVEL options: a model part
    (levels.MODEL_PARTS) or a Recipe setting (by its name or its flag's), whose levels are
    registered here. ValueError (one line) for an unknown factor or level, a factor given
    twice or one that a flag of the same command line already sets."""
    fields = {f.name: f for f in dataclasses.fields(Recipe)}
    by_flag = {flag_of(f).lstrip("-").replace("-", "_"): f.name for f in fields.values()
               if flag_of(f) and flag_of(f).startswith("--")}
    factors = {}
    for spec in specs:
        name, _, text = spec.partition("=")
        name = name.strip().replace("-", "_")
        words = [w.strip() for w in text.split(",") if w.strip()]
        if not name or not words:
            raise ValueError(f"--factor {spec!r}: write NAME=LEVEL,LEVEL (e.g. epochs=8,32)")
        if name in FACTORS:
            raise ValueError(f"--factor {name}: the design's own choices have their flag "
                             f"(--{name} {' '.join(LEVELS[name])})")
        name = by_flag.get(name, name)
        if name in factors:
            raise ValueError(f"--factor {name} is given twice")
        if len(set(words)) != len(words):
            raise ValueError(f"--factor {name} repeats a level: {text}")
        if name in MODEL_PARTS:
            unknown = [w for w in words if w not in MODEL_PARTS[name]]
            if unknown:
                raise ValueError(f"--factor {name}: unknown level {unknown[0]!r} "
                                 f"(known: {', '.join(MODEL_PARTS[name])})")
            factors[name] = words
            continue
        if name not in fields or fields[name].metadata["cli"].get("flag", "") is None:
            raise ValueError(f"--factor {name}: no such recipe setting or model part (settings: "
                             f"{', '.join(n for n in fields if n != 'replica_scaling')}; model "
                             f"parts: {', '.join(MODEL_PARTS)})")
        flag = flag_of(fields[name])
        if any(a == flag or a.startswith(flag + "=") for a in argv):
            raise ValueError(f"--factor {name} and {flag} both set {name}: give one")
        values = [parse_level(fields[name], w, name) for w in words]
        for value in values:  # each level must be a recipe that can train
            dataclasses.replace(recipe, **{name: value})
        factors[name] = register_setting_factor(name, values, fields[name].default)
    return factors


def parse_level(field, word, name):
    """One level of a Recipe-setting factor, read as its flag reads values."""
    cli = field.metadata["cli"]
    if "action" in cli:  # a switch
        if word.lower() not in BOOLEAN_WORDS:
            raise ValueError(f"--factor {name}: {word!r} is not true or false")
        return BOOLEAN_WORDS[word.lower()]
    choices = [c for c in cli.get("choices", []) if c != "auto"]  # a level is what runs record
    if choices and word not in choices:
        raise ValueError(f"--factor {name}: {word!r} is not one of {', '.join(choices)}")
    try:
        return cli.get("type", str)(word)
    except (ValueError, argparse.ArgumentTypeError):
        raise ValueError(f"--factor {name}: {word!r} is not a valid value") from None


def recorded_factors(folders, given):
    """The setting factors the runs of `folders` were trained with (their records name a
    level such as label_smoothing=0.1) and the model parts they record, beyond those `given`
    on this command line: setting factors registered with the values the runs' settings hold,
    so --report-only of a folder made with --factor needs no --factor again.
    {factor: [level names]}."""
    fields = {f.name: f for f in dataclasses.fields(Recipe)}
    values, parts = {}, {}
    for folder in folders:
        for run in run_store.finished_runs(folder):
            for name in fields:
                if name not in given and isinstance(run.get(name), str) and run[name].startswith(f"{name}="):
                    values.setdefault(name, set()).add(run_store.settings_of(run)[name])
            for part in MODEL_PARTS:
                if part not in given and part in run:
                    parts.setdefault(part, set()).add(run[part])
    found = {name: register_setting_factor(name, sorted(v, key=str), fields[name].default)
             for name, v in values.items()}
    return {**found, **{part: [lv for lv in MODEL_PARTS[part] if lv in v] for part, v in parts.items()}}
