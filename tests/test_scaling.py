"""Scaling out with real engines: shards of the grid (as job-array tasks), several workers on
one output dir, merging shard dirs, the multi-seed report, MirroredStrategy on two CPUs."""

import csv
import json
import shutil
from types import SimpleNamespace

import pytest
from conftest import SHORT_RUN, WORKER_GRID, assert_real_png, finish, start_cli

import fashion_mnist_cnn as fm
from fmlab.run import grid
from fmlab.store import run_store
from fmlab.run.data import prepare_data
from fmlab.core.errors import UsageError
from fmlab.run.variants import variant_grid

pytestmark = pytest.mark.trains  # trains models: left out of `make test-fast`

NAMES = {"CNN_ReLU_Strided_SGD", "CNN_LeakyReLU_Strided_SGD"}


def table(folder):
    with open(folder / "results.csv") as f:
        return {(r["name"], r["seed"]): r for r in csv.DictReader(f)}


@pytest.fixture(scope="module")
def shared_and_sharded(two_workers, tmp_path_factory):
    """The two workers' shared dir, and each worker's runs copied into a folder of its own,
    as if each had written there (the merge step's input)."""
    shared, outputs = two_workers
    root = tmp_path_factory.mktemp("scale")
    shards = [root / "shard0", root / "shard1"]
    args = fm.parse_args(WORKER_GRID)
    variants = variant_grid(args.activation, args.downsampling, args.optimizer)
    for index, folder in enumerate(shards):
        for variant, seed, multiplier in grid.planned_runs(variants, args.seeds, (index, 2)):
            shutil.copytree(run_store.run_dir(shared, variant.name, seed, multiplier),
                            run_store.run_dir(folder, variant.name, seed, multiplier))
    return SimpleNamespace(root=root, shared=shared, shards=shards, outputs=outputs)


def test_two_workers_on_one_dir_end_with_a_complete_table(shared_and_sharded):
    rows = table(shared_and_sharded.shared)
    assert set(rows) == {(n, s) for n in NAMES for s in ("0", "1")}
    assert all(r["status"] == "ok" for r in rows.values())
    slurm, k8s = shared_and_sharded.outputs
    assert "shard 0/2 done" in slurm and "shard 1/2 done" in k8s
    assert "[2/2]" in slurm and "[2/2]" in k8s and "[3/" not in slurm + k8s  # two runs each
    assert not (shared_and_sharded.shared / "report.html").exists()  # the merge step draws


def test_shard_folders_merge_to_the_shared_dir_rows(shared_and_sharded):
    s = shared_and_sharded
    merged = s.root / "merged"
    assert fm.main(["--report-only", *map(str, s.shards), "--output-dir", str(merged)]) == 0
    assert (merged / "report.html").is_file() and (merged / "factor_effects.png").is_file()
    single, combined = table(s.shared), table(merged)
    assert set(single) == set(combined)
    for key in single:
        for column in ("val_accuracy", "test_accuracy", "test_loss"):
            assert float(single[key][column]) == float(combined[key][column]), (key, column)


def test_multi_seed_report_has_statistics_and_factor_plot(tiny_grid):
    out = tiny_grid[0]
    assert_real_png(out / "factor_effects.png")
    summary = (out / "summary.md").read_text()
    for section in ("## What the data support", "## Variants over seeds",
                    "## Factor effects on test accuracy", "## Convergence speed"):
        assert section in summary, section
    # 2 variants x 2 seeds: one factor and the seed blocks leave 1 residual degree of freedom
    assert "Strided vs MaxPool: " in summary and "(model df 1)" in summary
    page = (out / "report.html").read_text()
    assert "Factor effects on test accuracy" in page and page.count("data:image/png") == 12


def test_merge_refuses_different_settings_and_conflicting_duplicates(shared_and_sharded, capsys):
    s = shared_and_sharded
    # the same runs in two dirs with equal results: kept once
    assert len(run_store.merged_runs([s.shared, *s.shards])) == 4
    assert capsys.readouterr().out.count("same results") == 4
    # a run whose copy differs, and a run with other settings: one-line errors, exit 2
    edited = s.root / "edited"
    run = s.shards[0] / "runs"
    metrics_path = next(run.glob("*/seed*/metrics.json"))
    copy = edited / metrics_path.relative_to(s.shards[0])
    copy.parent.mkdir(parents=True)
    record = json.loads(metrics_path.read_text())
    copy.write_text(json.dumps({**record, "test_accuracy": 0.5}))
    assert fm.main(["--report-only", str(s.shards[0]), str(edited), "--output-dir",
                    str(s.root / "x")]) == 2
    assert "with different results" in capsys.readouterr().err
    copy.write_text(json.dumps({**record, "seed": 9, "settings": {**record["settings"], "epochs": 5}}))
    assert fm.main(["--report-only", str(s.shards[0]), str(edited), "--output-dir",
                    str(s.root / "y")]) == 2
    assert "different settings" in capsys.readouterr().err


def plan(argv, environ=None):
    args = fm.parse_args(argv)
    shard = run_store.shard_from_environment(args.shard, args.shard_count, environ or {})
    variants = variant_grid(args.activation, args.downsampling, args.optimizer)
    return [(v.name, seed, m) for v, seed, m in grid.planned_runs(variants, args.seeds, shard,
                                                                   args.lr_scales)]


@pytest.mark.parametrize("count", [1, 3, 8, 30])
@pytest.mark.parametrize("scales", [[], ["--lr-scales", "0.5", "1", "2"]])
def test_shards_are_disjoint_and_cover_the_grid(count, scales):
    whole = plan(["--seeds", "0", "1", "2", *scales])
    size = 24 * max(len(scales) - 1, 1)
    assert len(whole) == size and len(set(whole)) == size
    slices = [plan(["--seeds", "0", "1", "2", *scales, "--shard", f"{i}/{count}"])
              for i in range(count)]
    assert sorted(sum(slices, [])) == sorted(whole)
    assert max(map(len, slices)) - min(map(len, slices)) <= 1  # balanced


def test_environment_variables_give_the_same_shards_as_the_flag():
    for i in range(4):
        flag = plan(["--seeds", "0", "1", "--shard", f"{i}/4"])
        slurm = plan(["--seeds", "0", "1"], {"SLURM_ARRAY_TASK_ID": str(i + 1),
                                              "SLURM_ARRAY_TASK_MIN": "1",
                                              "SLURM_ARRAY_TASK_COUNT": "4"})
        k8s = plan(["--seeds", "0", "1", "--shard-count", "4"], {"JOB_COMPLETION_INDEX": str(i)})
        assert flag == slurm == k8s
    assert plan([]) == plan([], {"OTHER": "1"})  # no shard: the whole grid


@pytest.mark.parametrize("argv, environ, message", [
    ([], {"JOB_COMPLETION_INDEX": "0"}, "--shard-count"),
    (["--shard-count", "2"], {}, "JOB_COMPLETION_INDEX"),
    ([], {"SLURM_ARRAY_TASK_ID": "9", "SLURM_ARRAY_TASK_COUNT": "4"}, "not within 0..3"),
    ([], {"SLURM_ARRAY_TASK_ID": "x", "SLURM_ARRAY_TASK_COUNT": "4"}, "integer"),
])
def test_bad_shard_environment_is_a_clear_error(argv, environ, message):
    with pytest.raises(UsageError, match=message):
        plan(argv, environ)


@pytest.mark.parametrize("argv, message", [
    (["--shard", "4/4"], "need 0 <= I < N"), (["--shard", "1"], "not I/N"),
    (["--shard", "a/b"], "not I/N"), (["--seeds", "1", "1"], "repeats a seed"),
    (["--seed", "1", "--seeds", "2"], "not both"),
    (["--bn-momentum", "1"], "--bn-momentum must be between 0 and 1"),
    (["--distribute", "ring"], "invalid choice: 'ring'")])
def test_bad_scaling_arguments_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        fm.parse_args(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_mirrored_on_two_cpus_is_the_same_experiment_as_one_device(short_run, tmp_path):
    """Two replicas split the global batch (--batch-size 64 = 2 x 32) at the same learning
    rate unless --scale-with-replicas asks otherwise: the same experiment as the one-device
    short run, so test accuracy within 5 points. Batch norm is synchronised across replicas,
    and the saved model reproduces the validation accuracy it was chosen by."""
    log = finish(start_cli(*SHORT_RUN, "--logical-cpus", "2", "--distribute", "mirrored",
                           "--output-dir", str(tmp_path / "mirrored")))
    assert "2 replica(s)" in log and "Epoch 1/2\n36/36" in log  # 2,304 images / 64 per step
    assert "1 replica(s)" in short_run[1]
    (m,), (s,) = table(tmp_path / "mirrored").values(), table(short_run[0]).values()
    run = "runs/CNN_ReLU_MaxPool_Adam/seed0"
    record = json.loads((tmp_path / "mirrored" / run / "metrics.json").read_text())
    assert record["status"] == "ok" and record["environment"]["replicas"] == 2
    assert record["settings"] == json.loads((short_run[0] / run / "metrics.json").read_text())["settings"]
    assert record["settings"]["replica_scaling"] == 1
    print(f"mirrored {m['test_accuracy']}, single {s['test_accuracy']}")  # pytest -s shows it
    assert float(m["test_accuracy"]) > 0.6 and float(s["test_accuracy"]) > 0.6
    assert abs(float(m["test_accuracy"]) - float(s["test_accuracy"])) < 0.05
    import keras
    model = keras.models.load_model(tmp_path / "mirrored" / run / "model.keras")
    assert model.get_layer("bn1").synchronized
    x_val, y_val = prepare_data(None, 2560, 0.1, seed=0)["val"]
    accuracy = float((model.predict(x_val, verbose=0).argmax(axis=1) == y_val).mean())
    assert accuracy == pytest.approx(record["val_accuracy"], abs=0.006)


def test_a_shard_with_no_runs_exits_0_without_training(tmp_path, capsys):
    # 8 runs in 30 slices: slice 29 is empty, which is normal for a large job array
    assert fm.main(["--shard", "29/30", "--output-dir", str(tmp_path)]) == 0
    assert "shard 29/30 done" in capsys.readouterr().out
    assert not (tmp_path / "runs").exists()
