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
    python fashion_mnist_cnn.py --tune-lr --seeds 0 1 2 --dry-run   # what is left to train
    python fashion_mnist_cnn.py --shard 0/4           # the first of 4 slices (cluster array)
    python fashion_mnist_cnn.py --report-only         # redraw figures, no training
    python fashion_mnist_cnn.py --report-only a b --output-dir merged   # merge shard dirs

Runs are resumable: rerun the same command after an interruption and finished runs
are skipped, an interrupted run continues from its last finished epoch. The report is
redrawn while the grid runs (after the first finished run, then at most every 2 minutes), so
the first comparison is there before the last run ends.
"""

import dataclasses
import itertools
import math
import os
import signal
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ banner out of logs

from fmlab.core import environment  # noqa: E402  (imports no TensorFlow)

from fmlab.core.errors import LabError, UsageError  # noqa: E402
from fmlab.core.levels import FACTORS  # noqa: E402
from fmlab.run import cli  # noqa: E402
from fmlab.run.data import prepare_data, prepare_test_images  # noqa: E402
from fmlab.run.recipe import (Recipe, gpus, grid_precision, recipe_for,  # noqa: E402
                              setting_names)
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


def write_report(output_dir, runs, x_test, progress=None, wide=None):
    """The report (fmlab.report), imported when first drawn: matplotlib is slow to load."""
    from fmlab.report.report import write_report as draw
    return draw(output_dir, runs, x_test, progress, wide)


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


def parse_args(argv=None):
    """The command line, checked (fmlab.run.cli): a bad value exits 2 with one line."""
    return cli.parse_args(argv, __doc__)


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
        # a factor some records name is every run's: one recorded before it existed is at
        # its default level (with_factor_levels), so no statistic meets a missing key
        extra = run_store.extra_factors(runs)
        runs = [run_store.with_factor_levels(run, extra) for run in runs]
        if any((Path(run["run_dir"]) / run_store.MODEL).exists() for run in runs):
            from fmlab.run.training import complete_saved_run  # a model to analyse: TensorFlow
            runs = [complete_saved_run(run, self.x_test) for run in runs]  # cached after the first time
        rows = run_store.write_results_table(self.context.output_dir, runs)
        if any((Path(run["run_dir"]) / run_store.TENSORBOARD).is_dir() for run in runs):
            from fmlab.run import tensorboard_hparams  # runs with TensorBoard logs: list them
            tensorboard_hparams.write_hparams_config(
                self.context.output_dir, runs,
                {f: sorted({r[f] for r in runs}) for f in (*FACTORS, *extra)})
        # the sweep protocol the folder records (tuning.json): which variants swept wide
        write_report(self.context.output_dir, runs, self.x_test, progress,
                     run_store.read_wide_sweep(self.context.output_dir))
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
    then = (f"; then seed{'s' * (len(seeds) > 2)} {', '.join(map(str, seeds[1:]))} at each "
            f"variant's chosen peak ({len(seeds[1:]) * len(variants)} runs)" if seeds[1:] else "")
    for round_ in itertools.count(1):
        finished = run_store.finished_runs(context.output_dir)
        sweep = lr_tuning.sweep_plan(variants, seeds[0], scales, finished, wide=wide)
        if sweep == planned:
            break
        done = {run_store.run_key(r) for r in finished}
        print(f"learning-rate sweep on seed {seeds[0]}, round {round_}: {len(sweep)} points, "
              f"{sum((v.name, m, s) not in done for v, s, m in sweep)} to train{then}", flush=True)
        planned = sweep
        nearest_first = sorted(planned, key=lambda run: abs(math.log2(run[2])))  # stable
        failed += run_grid(nearest_first, recipe, context, after_each_run)
    chosen, at_peaks = chosen_peak_runs(variants, seeds, planned,
                                        run_store.finished_runs(context.output_dir))
    for name, multiplier in chosen.items():
        print(f"chosen on validation: {name} at lr x{multiplier:g}", flush=True)
    return failed + run_grid(planned + at_peaks, recipe, context, after_each_run)


def chosen_peak_runs(variants, seeds, sweep, finished):
    """({variant name: chosen multiplier}, the other seeds' runs there) on a finished sweep."""
    keys = {(v.name, m, s) for v, s, m in sweep}
    chosen = lr_tuning.chosen_multipliers([r for r in finished if run_store.run_key(r) in keys])
    return chosen, [(v, s, chosen[v.name]) for s in seeds[1:] for v in variants if v.name in chosen]


def dry_run(args, variants, recipe, context):
    """--dry-run: the runs this command would train now, resume or skip, read from the
    folder as a real start reads it (a folder made with other settings is refused alike);
    nothing is trained, deleted or written. A tuning sweep that can still grow leaves the
    seeds at the chosen peaks unknown: they are counted, not listed."""
    finished = run_store.finished_runs(context.output_dir)
    later = ""
    if args.tune_lr:
        wide = run_store.wide_sweep(args.wide_sweep, args.output_dir, [v.name for v in variants],
                                    record=False)
        planned = lr_tuning.sweep_plan(variants, args.seeds[0], args.lr_scales, finished, wide=wide)
        done = {run_store.run_key(r) for r in finished}
        if all((v.name, m, s) in done for v, s, m in planned):  # the sweep grows no further
            planned += chosen_peak_runs(variants, args.seeds, planned, finished)[1]
        elif args.seeds[1:]:
            later = (f"; then seed{'s' * (len(args.seeds) > 2)} "
                     f"{', '.join(map(str, args.seeds[1:]))} at each variant's "
                     f"chosen peak ({len(args.seeds[1:]) * len(variants)} runs), once the sweep "
                     "stops growing (each end grows while within "
                     f"{100 * lr_tuning.TUNING_BAND:g} pp of the best)")
    else:
        planned = planned_runs(variants, args.seeds, context.shard, args.lr_scales)
    todo, skipped = run_store.runs_to_do(  # never fresh here: that would delete
        planned, context.output_dir, lambda variant: dataclasses.asdict(recipe_for(recipe, variant)),
        False, setting_names())
    again = [(v, s, m, None) for v, s, m, _ in skipped] if args.fresh else []
    for variant, seed, multiplier, folder in again + todo:
        what = ("retrain" if folder is None else "resume " if (folder / run_store.SETTINGS).exists()
                and not args.fresh else "train  ")
        print(f"{what} {label(variant, multiplier)} seed {seed}")
    todo = again + todo
    took = [r["train_seconds"] + r.get("evaluation_seconds", 0) for r in finished
            if r["status"] == "ok" and r.get("train_seconds")]
    estimate = (f", about {run_store.format_seconds(len(todo) * sum(took) / len(took))} at this "
                f"folder's mean run time ({run_store.format_seconds(sum(took) / len(took))})"
                if todo and took else "")
    kept = (f"{len(again)} of them finished (--fresh retrains them)" if args.fresh
            else f"{len(skipped)} finished")
    print(f"{len(todo)} to train, {kept}{estimate}{later}; nothing was trained (--dry-run)")
    return 0


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
        if not args.dry_run:  # a dry run writes nothing
            args.output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"{args.output_dir}: --output-dir cannot be created "
                         f"({e.strerror})") from None
    if not args.dry_run and not os.access(args.output_dir, os.W_OK):
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

    if args.dry_run:
        return dry_run(args, variants, recipe, context)
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
    folders = args.report_only or [args.output_dir]
    factors = {**args.factors, **cli.recorded_factors(folders, args.factors)}
    runs = run_store.merged_runs(folders, list(factors))
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
