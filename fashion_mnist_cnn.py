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
from fmlab.run import grid  # noqa: E402
from fmlab.run.data import prepare_test_images  # noqa: E402
from fmlab.run.recipe import Recipe, gpus, grid_precision  # noqa: E402
from fmlab.run.variants import count_params, variant_grid  # noqa: E402
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


def parse_args(argv=None):
    """The command line, checked (fmlab.run.cli): a bad value exits 2 with one line."""
    return cli.parse_args(argv, __doc__)


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


# ----------------------------------------------------------------------------- the report

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
    context = grid.Context(args.output_dir, args.data_dir, strategy, shard, args.fresh, why)
    for warning in (environment.gpu_mismatch_warning(len(gpus())),
                    environment.slow_bfloat16_warning(precision, len(gpus()), environment.cpu_flags())):
        if warning:
            print(warning, file=sys.stderr)
    jit = bool(gpus()) and replicas == 1 and not args.deterministic  # jit_compile="auto" on TF
    print(environment.summary_line(environment.describe(tf, keras, strategy, recipe.precision, jit,
                                                        why)), flush=True)

    if args.dry_run:
        return grid.dry_run(args, variants, recipe, context)
    report = Reporter(context)
    # a shard draws nothing: other shards' runs are elsewhere, the merge step draws
    draws = args.report and not shard
    redraw = Redraw(report, args.output_dir) if draws else None
    if args.tune_lr:
        wide = run_store.wide_sweep(args.wide_sweep, args.output_dir, [v.name for v in variants])
        failed = grid.tune_learning_rates(variants, args.seeds, args.lr_scales, recipe, context,
                                     redraw, wide)
    else:
        failed = grid.run_grid(grid.planned_runs(variants, args.seeds, shard, args.lr_scales), recipe,
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
    return finish(args, Reporter(grid.Context(args.output_dir, args.data_dir)), runs, [], None)


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
