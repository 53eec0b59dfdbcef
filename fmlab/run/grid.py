"""The grid's runs, one after another: which to train, resume or skip in a folder, the
learning-rate tuning protocol's rounds, and a dry run of either. Training itself is
fmlab.run.training (TensorFlow, imported when the first run starts); the report is drawn by
the caller between runs (after_each_run).
"""

import dataclasses
import itertools
import math
import time
from pathlib import Path

from fmlab.run.data import prepare_data
from fmlab.run.recipe import recipe_for, setting_names
from fmlab.stats import lr_tuning
from fmlab.store import run_store


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


def runs_to_do(planned, recipe, output_dir, fresh):
    """run_store.runs_to_do with each variant's own recipe (a factor may set a setting) and
    the flags' names for settings that differ."""
    return run_store.runs_to_do(
        planned, output_dir, lambda variant: dataclasses.asdict(recipe_for(recipe, variant)),
        fresh, setting_names())


def run_grid(planned, recipe, context, after_each_run=None):
    """Train every planned (variant, seed, lr multiplier) run not yet finished; returns the
    failed ones.
    after_each_run(finished, planned): called while runs remain, e.g. to redraw the report."""
    todo, skipped = runs_to_do(planned, recipe, context.output_dir, context.fresh)
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
    todo, skipped = runs_to_do(planned, recipe, context.output_dir, False)  # fresh would delete
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
