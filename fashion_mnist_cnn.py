"""Which design choices make a small CNN good on Fashion-MNIST?

Trains one custom Keras CNN per combination of three design choices -- ReLU vs
LeakyReLU, max pooling vs strided convolution, Adam vs SGD with momentum -- on the
real Fashion-MNIST data, evaluates each on the test set and writes a results table
and figures to --output-dir.

    python fashion_mnist_cnn.py                       # all 8 variants, full data
    python fashion_mnist_cnn.py --quick               # a few minutes, same outputs
    python fashion_mnist_cnn.py --optimizer adam --activation relu --epochs 5 --output-dir results-5ep
    python fashion_mnist_cnn.py --factor epochs=8,32  # any setting as one more factor (16 variants)
    python fashion_mnist_cnn.py --list-variants       # names and parameter counts
    python fashion_mnist_cnn.py --seeds 0 1 2         # every variant once per seed
    python fashion_mnist_cnn.py --lr-scales 0.5 1 2   # and at half and twice its peak
    python fashion_mnist_cnn.py --tune-lr --seeds 0 1 2   # tune each peak, then compare
    python fashion_mnist_cnn.py --shard 0/4           # the first of 4 slices (cluster array)
    python fashion_mnist_cnn.py --report-only         # redraw figures, no training
    python fashion_mnist_cnn.py --report-only a b --output-dir merged   # merge shard dirs

Runs are resumable: rerun the same command after an interruption and finished runs
are skipped, an interrupted run continues from its last finished epoch. The report is
redrawn while the grid runs (after the first finished run, then at most every 2 minutes), so
the first comparison is there before the last run ends.
"""

import argparse
import dataclasses
import math
import os
import signal
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ banner out of logs

from fmlab.core import environment  # noqa: E402  (imports no TensorFlow)

from fmlab.core.errors import LabError, Parser, UsageError, positive_int  # noqa: E402
from fmlab.core.levels import FACTORS, LEVELS, MODEL_PARTS, register_setting_factor  # noqa: E402
from fmlab.run.data import prepare_data, prepare_test_images  # noqa: E402
from fmlab.run.recipe import (QUICK, Recipe, flag_of, gpus, grid_precision,  # noqa: E402
                              recipe_for, setting_names)
from fmlab.run.variants import count_params, variant_grid  # noqa: E402
from fmlab.stats import lr_tuning  # noqa: E402
from fmlab.store import run_store  # noqa: E402

# TensorFlow is imported when a run needs it (load_tensorflow): --help, --list-variants and
# --report-only of a committed study start in a fraction of the time and never load it.


def load_tensorflow():
    """TensorFlow and Keras, imported quietly, with GPU memory taken as needed (so workers
    can share one GPU)."""
    with environment.native_stderr_silenced():  # TensorFlow's CUDA probing prints on import
        import keras
        import tensorflow as tf

        for gpu in tf.config.list_physical_devices("GPU"):
            tf.config.experimental.set_memory_growth(gpu, True)
    return tf, keras


def write_report(output_dir, runs, x_test, progress=None):
    """The report (fmlab.report), imported when first drawn: matplotlib is slow to load."""
    from fmlab.report.report import write_report as draw
    return draw(output_dir, runs, x_test, progress)


QUICK_OUTPUT_DIR = Path("results-quick")  # --quick runs never mix with real ones


@dataclasses.dataclass(frozen=True)
class Context:
    """Where and on what the runs execute -- not part of any run's settings: the same recipe
    is the same experiment in any folder, on any device, in any shard."""
    output_dir: Path
    data_dir: Path | None = None
    strategy: object = None
    shard: tuple | None = None  # (index, count) of this worker's slice of the grid
    fresh: bool = False
    precision_reason: str = ""  # why the runs train in the recipe's precision


# ----------------------------------------------------------------------------- CLI

class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Defaults in the help where they say something: not for switches (True/False), not
    for None (the help says what happens then), not twice where the help already says it."""

    def _get_help_string(self, action):
        if action.default is None or isinstance(action.default, bool) or "default" in action.help:
            return action.help
        return super()._get_help_string(action)


def build_parser():
    p = Parser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter,
               epilog="examples:\n" + __doc__.split("\n\n")[2])
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
    recipe.add_argument("--lr-scale", dest="lr_scale", type=float, default=argparse.SUPPRESS,
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


def parse_args(argv=None):
    """The command line, checked: a bad value exits 2 with one line (argparse's error)."""
    p = build_parser()
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


def planned_runs(variants, seeds, shard=None, lr_multipliers=(1.0,)):
    """Every (variant, seed, lr multiplier) run of the grid, in a fixed order, or this
    shard's slice of it: every N-th run from I, so slices are disjoint, cover the grid and
    take similar time."""
    runs = [(variant, seed, multiplier) for seed in seeds for multiplier in lr_multipliers
            for variant in variants]
    if shard:
        index, count = shard
        runs = runs[index::count]
    return runs


def print_table(rows):
    print(f"\n{'variant':42} {'seed':>4} {'params':>8} {'epochs':>6} {'val acc':>8} {'test acc':>8} "
          f"{'test loss':>9} {'time':>7}")
    for r in rows:
        head = f"{run_store.run_label(r):42} {r['seed']:>4} {r['trainable_params']:>8,}"
        if r["status"] != "ok":
            print(f"{head} {'FAILED':>6}")
            continue
        print(f"{head} {r['epochs_run']:>6} {r['val_accuracy']:>8.4f} {r['test_accuracy']:>8.4f} "
              f"{r['test_loss']:>9.4f} {run_store.format_seconds(r['train_seconds']):>7}")


# ----------------------------------------------------------------------------- the grid

class Reporter:
    """Writes the results table, TensorBoard's HParams columns and the report of the finished
    runs; loads the test images (the report shows some) the first time it draws."""

    def __init__(self, context):
        self.context, self.x_test = context, None

    def __call__(self, runs, progress=None):
        if self.x_test is None:
            self.x_test = prepare_test_images(self.context.data_dir)
        if any((Path(run["run_dir"]) / run_store.MODEL).exists() for run in runs):
            from fmlab.run.training import complete_saved_run  # a model to analyse: TensorFlow
            runs = [complete_saved_run(run, self.x_test) for run in runs]  # cached after the first time
        rows = run_store.write_results_table(self.context.output_dir, runs)
        if any((Path(run["run_dir"]) / run_store.TENSORBOARD).is_dir() for run in runs):
            from fmlab.run import tensorboard_hparams  # runs with TensorBoard logs: list them
            tensorboard_hparams.write_hparams_config(
                self.context.output_dir, runs,
                {f: sorted({r[f] for r in runs if f in r}) for f in (*FACTORS, *run_store.extra_factors(runs))})
        write_report(self.context.output_dir, runs, self.x_test, progress)
        return rows


REDRAW_INTERVAL_S = 120  # short runs (--quick) would otherwise spend much of their time drawing


class Redraw:
    """While a grid runs, the report of the finished runs after the first run, then after a
    run whenever REDRAW_INTERVAL_S have passed since the last redraw: after every run of a
    full grid (runs take minutes), after every few of a quick one. The grid's end draws."""

    def __init__(self, report, output_dir, interval=REDRAW_INTERVAL_S, clock=time.monotonic):
        self.report, self.output_dir, self.interval, self.clock = report, output_dir, interval, clock
        self.last = None

    def __call__(self, done, total):
        if self.last is not None and self.clock() - self.last < self.interval:
            return
        self.report(run_store.finished_runs(self.output_dir), (done, total))
        self.last = self.clock()


def run_grid(planned, recipe, context, after_each_run=None):
    """Train every planned (variant, seed, lr multiplier) run not yet finished; returns the
    failed ones.
    after_each_run(finished, planned): called while runs remain, e.g. to redraw the report."""
    todo, skipped = run_store.runs_to_do(
        planned, context.output_dir, lambda variant: dataclasses.asdict(recipe_for(recipe, variant)),
        context.fresh, setting_names())
    for variant, seed, multiplier, status in skipped:
        print(f"skip {label(variant, multiplier)} seed {seed}: finished ({status}), --fresh "
              "retrains it")
    if context.shard:  # other workers may share the dir: clean only its own run folders now,
        run_store.remove_leftover_temp_files([d for *_, d in todo])  # elsewhere stale files
        run_store.remove_leftover_temp_files([context.output_dir], older_than=600)
    else:
        run_store.remove_leftover_temp_files([context.output_dir])
    failed, started, data = [], time.time(), {}
    for i, (variant, seed, multiplier, run_dir) in enumerate(todo, start=1):
        own = recipe_for(recipe, variant)
        key = (seed, own.subset, own.val_fraction, own.test_images)
        if key not in data:  # each seed has its own train/validation split
            data = {key: prepare_data(context.data_dir, own.subset, own.val_fraction, seed,
                                      own.test_images)}
            print(f"data (seed {seed}): {len(data[key]['train'][0])} train, "
                  f"{len(data[key]['val'][0])} validation, {len(data[key]['test'][0])} test "
                  f"images", flush=True)
        elapsed = time.time() - started
        eta = (f", ~{run_store.format_seconds(elapsed / (i - 1) * (len(todo) - i + 1))} left"
               if i > 1 else "")
        name = label(variant, multiplier)
        print(f"\n[{i}/{len(todo)}] {name} seed {seed} "
              f"(elapsed {run_store.format_seconds(elapsed)}{eta})", flush=True)
        from fmlab.run.training import train_and_evaluate  # TensorFlow from here on
        record = train_and_evaluate(variant, seed, data[key], own, context.strategy, run_dir,
                                    multiplier, context.precision_reason)
        if record["status"] != "ok":
            print(f"FAILED {name} seed {seed}: {record['reason']}", flush=True)
            failed.append(record)
        else:
            print(f"{name} seed {seed}: val {record['val_accuracy']:.4f}, test "
                  f"{record['test_accuracy']:.4f} in "
                  f"{run_store.format_seconds(record['train_seconds'])}", flush=True)
        run_store.write_results_table(context.output_dir)
        if after_each_run and i < len(todo):
            after_each_run(len(skipped) + i, len(planned))
    return failed


def label(variant, multiplier):
    return run_store.run_label({"name": variant.name, "lr_multiplier": multiplier})


def tune_learning_rates(variants, seeds, scales, recipe, context, after_each_run=None, wide=None):
    """The tuning protocol (lr_tuning): the sweep on the first seed, grown on each side
    while that side is within the band of the variant's best (the `wide` variants only,
    when given); then the other seeds at each variant's chosen multiplier. Resumable like
    any grid: every decision is taken again from the finished runs. The recipe's peaks (x1)
    train first, then the points nearest them: a study stopped after its first runs holds
    the plain grid of the first seed."""
    failed, planned = [], []
    while True:
        sweep = lr_tuning.sweep_plan(variants, seeds[0], scales,
                                     run_store.finished_runs(context.output_dir), wide=wide)
        if sweep == planned:
            break
        planned = sweep
        nearest_first = sorted(planned, key=lambda run: abs(math.log2(run[2])))  # stable
        failed += run_grid(nearest_first, recipe, context, after_each_run)
    keys = {(v.name, m, s) for v, s, m in planned}
    swept = [r for r in run_store.finished_runs(context.output_dir) if run_store.run_key(r) in keys]
    chosen = lr_tuning.chosen_multipliers(swept)
    for name, multiplier in chosen.items():
        print(f"chosen on validation: {name} at lr x{multiplier:g}", flush=True)
    planned += [(v, s, chosen[v.name]) for s in seeds[1:] for v in variants if v.name in chosen]
    return failed + run_grid(planned, recipe, context, after_each_run)


def raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None):
    args = parse_args(argv)
    # Ctrl-C and kill (SIGTERM) stop cleanly, also where a shell started us with SIGINT
    # ignored (`cmd &` in a script): finished epochs and runs are on disk already.
    previous = {s: signal.signal(s, raise_interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return run(args)
    except LabError as e:  # DataError, UsageError: the user can fix it
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: finished runs and the last finished epoch are saved, and the "
              "report shows the finished runs; rerun the same command to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `--list-variants | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's documented way
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run(args):
    variants = variant_grid(args.activation, args.downsampling, args.optimizer, args.factors)
    if args.list_variants:
        for v in variants:
            print(f"{v.name:40} {count_params(v, args.bn_scale):>9,} trainable parameters")
        return 0
    try:
        args.output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"{args.output_dir}: --output-dir cannot be created "
                         f"({e.strerror})") from None
    if not os.access(args.output_dir, os.W_OK):
        raise UsageError(f"{args.output_dir}: --output-dir is not writable")
    if args.report_only is not None:
        return report_only(args)
    tf, keras = load_tensorflow()
    if args.logical_cpus:
        try:
            tf.config.set_logical_device_configuration(
                tf.config.list_physical_devices("CPU")[0],
                [tf.config.LogicalDeviceConfiguration()] * args.logical_cpus)
        except RuntimeError:
            raise UsageError("--logical-cpus works only before TensorFlow has started "
                             "(use it from the command line)") from None
    if args.deterministic:  # TensorFlow-wide, before any compile(); clear_session keeps it
        tf.config.experimental.enable_op_determinism()
    from fmlab.run.training import distribution_strategy
    strategy = distribution_strategy(args.distribute, args.logical_cpus)
    replicas = strategy.num_replicas_in_sync
    if args.batch_size < replicas:
        raise UsageError(f"--batch-size {args.batch_size} is smaller than the {replicas} "
                         "replicas it is split between")
    precision, why = grid_precision(args.precision, args.output_dir)
    recipe = Recipe.from_args(args, replicas, precision)
    shard = run_store.shard_from_environment(args.shard, args.shard_count, os.environ)
    context = Context(args.output_dir, args.data_dir, strategy, shard, args.fresh, why)
    for warning in (environment.gpu_mismatch_warning(len(gpus())),
                    environment.slow_bfloat16_warning(precision, len(gpus()), environment.cpu_flags())):
        if warning:
            print(warning, file=sys.stderr)
    jit = bool(gpus()) and replicas == 1 and not args.deterministic  # jit_compile="auto" on TF
    print(environment.summary_line(environment.describe(tf, keras, strategy, recipe.precision, jit,
                                                        why)), flush=True)

    report = Reporter(context)
    # a shard draws nothing: other shards' runs are elsewhere, the merge step draws
    draws = args.report and not shard
    redraw = Redraw(report, args.output_dir) if draws else None
    if args.tune_lr:
        wide = run_store.wide_sweep(args.wide_sweep, args.output_dir, [v.name for v in variants])
        failed = tune_learning_rates(variants, args.seeds, args.lr_scales, recipe, context,
                                     redraw, wide)
    else:
        failed = run_grid(planned_runs(variants, args.seeds, shard, args.lr_scales), recipe,
                          context, redraw)
    runs = run_store.finished_runs(args.output_dir) if draws else None
    return finish(args, report, runs, failed, shard)


def report_only(args):
    """--report-only: the report of the finished runs of the given folders (default:
    --output-dir) into --output-dir; trains nothing, loads TensorFlow only to analyse a saved
    model that lacks its analysis."""
    runs = run_store.merged_runs(args.report_only or [args.output_dir], list(args.factors))
    run_store.carry_wide_sweep(args.report_only, args.output_dir)
    return finish(args, Reporter(Context(args.output_dir, args.data_dir)), runs, [], None)


def finish(args, report, runs, failed, shard):
    """The results table, the report where it is drawn, and the exit code."""
    if runs is None:
        print_table(run_store.write_results_table(args.output_dir))
        if shard:
            print(f"\nshard {shard[0]}/{shard[1]} done. When every shard is: "
                  f"python fashion_mnist_cnn.py --report-only DIR [DIR ...] --output-dir OUT")
        else:
            print(f"\nresults in {args.output_dir}/results.csv; to draw the report: "
                  f"python fashion_mnist_cnn.py --report-only --output-dir {args.output_dir}")
    elif not runs:
        raise UsageError(f"{args.output_dir}: no finished runs to report")
    else:
        print_table(report(runs))
        print(f"\nresults in {args.output_dir}/ (results.csv, report.html, figures)")
    if failed:
        print(f"{len(failed)} run(s) failed: {', '.join(run_store.run_label(r) for r in failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
