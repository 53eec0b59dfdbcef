"""The one-page report: tables, statistics and figures of the finished runs, as report.html
(self-contained) and summary.md.

write_report reads what the runner saved (metrics.json, histories, and the best run's
figures.npz: what its model-dependent figures draw), computes the statistics and calls
visualization_utils to draw them; it never trains and never loads a model, so `--report-only`
rebuilds everything from saved runs -- also without their saved models, which stay out of
git. The page is one list of Sections, rendered once to Markdown and once to HTML.
"""

import base64
import dataclasses
import html
import re
from collections import Counter
from pathlib import Path

import numpy as np

from fmlab.stats import claims
from fmlab.stats import factor_analysis as fa
from fmlab.stats import lr_tuning, machines
from fmlab.core.dataset_facts import CLASS_NAMES
from fmlab.measures.model_analysis import GRADCAM_LAYER, MAP_LAYERS, SAMPLE_INDEX
from fmlab.core.levels import DISPLAY, FACTORS, LEVELS
from fmlab.report.report_statistics import BEYOND_INTRO, beyond_accuracy, statistics_sections
from fmlab.report.report_study import study_sections
from fmlab.report.wording import counted, format_interval, seeds_phrase
from fmlab.store.run_store import (atomic_write, device_of, extra_factors, format_seconds, load_figure_data, lr_multiplier_of,
                       run_label, settings_of)
from fmlab.figures.best_run import (plot_activation_maps, plot_confusion_matrix, plot_filters,
                                    plot_gradcam, plot_misclassified)
from fmlab.figures.plots import plot_factor_effects, plot_per_class_accuracy, plot_training_curves, variant_label


@dataclasses.dataclass
class Section:
    """One part of the page: a heading and what follows it, in this order."""
    title: str | None = None
    level: int = 2
    warnings: list = dataclasses.field(default_factory=list)
    paragraphs: list = dataclasses.field(default_factory=list)
    bullets: list = dataclasses.field(default_factory=list)
    table: tuple | None = None  # (header, rows of strings)
    figures: list = dataclasses.field(default_factory=list)  # (path, caption)


def to_markdown(sections):
    lines = []
    for s in sections:
        if s.title:
            lines.append(f"{'#' * s.level} {s.title}\n")
        lines += [f"> **{w}**\n" for w in s.warnings]
        lines += [f"{p}\n" for p in s.paragraphs]
        if s.bullets:
            lines += [f"- {b}" for b in s.bullets] + [""]
        if s.table:
            lines += [markdown_table(*s.table), ""]
        lines += [f"![{p.stem}]({p.name})\n\n{caption}\n" for p, caption in s.figures]
    return "\n".join(lines) + "\n"


def to_html(sections, title):
    page = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>{HTML_STYLE}</style></head><body>"]
    for s in sections:
        if s.title:
            page.append(f"<h{s.level}>{html.escape(s.title)}</h{s.level}>")
        page += [f"<p class='warning'><b>{html.escape(w)}</b></p>" for w in s.warnings]
        page += [f"<p>{bold(html.escape(p))}</p>" for p in s.paragraphs]
        if s.bullets:
            page += ["<ul>", *[f"<li>{html.escape(b)}</li>" for b in s.bullets], "</ul>"]
        if s.table:
            page.append(html_table(*s.table))
        page += [figure_html(p, caption) for p, caption in s.figures]
    page.append("</body></html>")
    return "\n".join(page) + "\n"


def bold(text):
    """Markdown's **strong** as HTML's <b>."""
    return re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)


def mean_over_seeds(runs):
    """One pseudo-run per variant whose history is the per-epoch mean over its seeds, for
    curves and heatmaps that would be unreadable with a line per seed."""
    by_name = {}
    for run in runs:
        by_name.setdefault(run["name"], []).append(run)
    merged = []
    for name, group in by_name.items():
        epochs = min(len(r["history"]) for r in group)
        history = [{k: float(np.mean([r["history"][e][k] for r in group]))
                    for k in ("accuracy", "val_accuracy", "loss", "val_loss")} for e in range(epochs)]
        best = 1 + int(np.argmax([row["val_accuracy"] for row in history])) if history else 1
        merged.append({**group[0], "history": history, "best_epoch": best, "n_seeds": len(group)})
    return merged


def results_rows(runs):
    """The report's table as (header, rows of strings)."""
    header = ["variant", "seed", "peak lr", "trainable params", "epochs", "best epoch",
              "train acc", "val acc", "test acc", "test loss", "train time"]
    rows = []
    for r in runs:
        peak = r.get("peak_lr") or settings_of(r)[f"{r['optimizer']}_peak_lr"]
        head = [run_label(r), str(r["seed"]), f"{peak:.3g}",
                f"{r['trainable_params']:,}", str(r["epochs_run"])]
        if r["status"] != "ok":
            rows.append(head + ["failed", "", "", "", "", ""])
            continue
        rows.append(head + [str(r["best_epoch"]), f"{100 * r['train_accuracy']:.2f}%",
                     f"{100 * r['val_accuracy']:.2f}%", f"{100 * r['test_accuracy']:.2f}%",
                     f"{r['test_loss']:.4f}", f"{r['train_seconds'] / 60:.1f} min"])
    return header, rows


def classification_rows(report, class_names):
    header = ["class", "precision", "recall", "F1", "support"]
    rows = [[c, f"{report[c]['precision']:.4f}", f"{report[c]['recall']:.4f}",
             f"{report[c]['f1-score']:.4f}", str(int(report[c]["support"]))]
            for c in [*class_names, "macro avg", "weighted avg"]]
    return header, rows


def markdown_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def html_table(header, rows):
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def smoke_check_warning(settings):
    """A sentence for the top of a report trained on a subset (--quick, --subset): its numbers
    check the pipeline and say nothing about the design choices."""
    if settings.get("subset"):
        return (f"Smoke check of the pipeline, not results: trained on {settings['subset']:,} "
                f"images for {counted(settings.get('epochs'), 'epoch')}. "
                "Differences between variants "
                "here are noise; run without --quick/--subset for comparisons.")
    return None


def compute_sentence(runs):
    """What the grid cost: training and evaluation time summed over its runs. Each run records
    both, so the sum is the grid's wall time run one after another, also when it was resumed
    across sessions or split between machines (the devices are named)."""
    train = sum(r.get("train_seconds", 0.0) for r in runs)
    timed = [r["evaluation_seconds"] for r in runs if "evaluation_seconds" in r]
    devices = Counter(device for device in map(device_of, runs) if device)
    text = (f"Compute: {counted(len(runs), 'run')}, {format_seconds(train)} of training + "
            f"{format_seconds(sum(timed))} of evaluation = {format_seconds(train + sum(timed))} "
            f"one after another")
    untimed = sum(r["status"] == "ok" and "evaluation_seconds" not in r for r in runs)
    if untimed:  # runs from before the field existed
        text += f" (evaluation time not recorded for {untimed} run(s))"
    if len(devices) > 1:  # a grid resumed or split across machines: how much ran where
        text += ", on " + "; ".join(f"{d} ({counted(n, 'run')})" for d, n in sorted(devices.items())) + "."
    else:
        text += f", on {next(iter(devices))}." if devices else "."
    per_seed = {}  # seed -> [seconds, runs]: what one seed's grid (a plain `make run`) cost
    for r in runs:
        entry = per_seed.setdefault(r["seed"], [0.0, 0])
        entry[0] += r.get("train_seconds", 0.0) + r.get("evaluation_seconds", 0.0)
        entry[1] += 1
    if len(per_seed) > 1:
        text += " Per seed: " + ", ".join(
            f"seed {s} {format_seconds(seconds)} ({counted(n, 'run')})"
            for s, (seconds, n) in sorted(per_seed.items())) + "."
    return text


def machine_sentence(runs):
    """Whether the machines of a study resumed or split across several moved its test
    accuracy (fmlab.stats.machines); None with one machine."""
    check = machines.machine_effect(runs)
    if check is None:
        return None
    (reference, _), *_ = check["machines"]
    each = "; ".join(f"on {e['machine']} {100 * e['estimate']:+.2f} pp "
                     f"{format_interval(e['low'], e['high'])}" for e in check["effects"])
    return (f"Machines: with the machine as a term beside each run's cell (variant and learning "
            f"rate) and seed (OLS, {check['df']} residual df), test accuracy {each} against "
            f"{reference} (95% interval; F test of the machine p = {check['p']:.2g}). Runs met a "
            "machine by when they ran, not by design: a shift beyond the interval is unlikely, "
            "one inside it is not ruled out.")


def settings_rows(run):
    """A run's settings and environment as a two-column table."""
    rows = [[key, str(value)] for key, value in run.get("settings", {}).items()]
    if "peak_lr" in run:  # the settings hold the grid's peaks; a sweep point trains at its own
        rows.append(["this run's peak learning rate",
                     f"{run['peak_lr']:g} (x{lr_multiplier_of(run):g} of the recipe's peak)"])
    env = run.get("environment")
    if env:
        rows += [["device", env["device"]], ["backend", env["backend"]],
                 ["XLA", "on" if env["xla"] else "off"], ["replicas", str(env["replicas"])],
                 ["TensorFlow / Keras", f"{env['packages'].get('tensorflow')} / "
                                        f"{env['packages'].get('keras')}"]]
    return ["setting", "value"], rows


HTML_STYLE = """.warning{background:#fff3cd;border:1px solid #e0c36a;padding:.6em 1em}
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:14px}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}th{background:#f3f3f3}figure{margin:2em 0}
img{max-width:100%;border:1px solid #eee}figcaption{color:#555;font-size:14px;margin-top:.4em}"""


BEST_RUN_FIGURES = ("confusion_matrix", "filters", "activation_maps", "misclassified", "gradcam")


def progress_warning(progress):
    """A sentence for the top of a report drawn while its grid still runs."""
    if progress and progress[0] < progress[1]:
        return (f"Grid in progress: {progress[0]} of {progress[1]} runs finished. This report "
                "is redrawn as runs finish; its comparisons cover the finished runs only.")
    return None


def table_section(table, level=2):
    title, intro, header, rows = table
    return Section(title, level, paragraphs=[intro], table=(header, rows))


def best_run_figures(best, best_run, x_test, output_dir, class_names=CLASS_NAMES):
    """The best run's five figures as (path, caption): confusion matrix, first-layer filters,
    activation maps of a sample image, most confident mistakes and Grad-CAM, drawn from its
    saved figure data; the figures of a run that was best before are removed."""
    drawn = load_figure_data(best["run_dir"])
    mistakes, explained = drawn["mistakes_index"], drawn["gradcam_index"]
    tag = best["name"]
    for kind in BEST_RUN_FIGURES:  # a grid's best changes as its runs finish: one set only
        for old in output_dir.glob(f"CNN_*_{kind}.png"):
            if old.name != f"{tag}_{kind}.png":
                old.unlink()
    best_title = f"{best['name']} ({best_run}; best on validation)"
    return [
        (plot_confusion_matrix(best["confusion_matrix"], class_names,
                               output_dir / f"{tag}_confusion_matrix.png", best_title),
         f"Test-set confusion matrix of {best['name']} ({best_run}): rows are true "
         "classes, columns predictions, each cell with its count and share of the row."),
        (plot_filters(drawn["kernels"], output_dir / f"{tag}_filters.png", best_title),
         "The 32 learned 3x3 kernels of the first convolution on one shared colour scale "
         "(red positive, blue negative weights)."),
        (plot_activation_maps(x_test[SAMPLE_INDEX],
                              [(name, drawn[f"map_{name}"].astype(np.float32)) for name in MAP_LAYERS],
                              output_dir / f"{tag}_activation_maps.png", best_title),
         f"What each conv layer of {best['name']} responds to in test image "
         f"{SAMPLE_INDEX} ({class_names[drawn['sample_label']]}), layer by layer; later layers "
         "work at half and quarter resolution."),
        (plot_misclassified(x_test[mistakes], drawn["mistakes_label"], drawn["mistakes_predicted"],
                            drawn["mistakes_confidence"], class_names,
                            output_dir / f"{tag}_misclassified.png", best_title),
         "The test images the best model gets wrong with the highest confidence, with the "
         "true class, the predicted class and the model's confidence."),
        (plot_gradcam(x_test[explained], drawn["gradcam_heatmaps"], drawn["gradcam_label"],
                      drawn["gradcam_predicted"], drawn["gradcam_confidence"], class_names,
                      output_dir / f"{tag}_gradcam.png",
                      f"{best_title}\nGrad-CAM for the predicted class at {GRADCAM_LAYER} (the last "
                      f"of the four 3x3 conv layers, after batch norm and activation, 14x14)"),
         f"Where {best['name']} looks: Grad-CAM heat maps (Selvaraju et al. 2017) of the "
         f"predicted class at layer {GRADCAM_LAYER}, for correctly classified images (green "
         "titles) and the most confident mistakes (red). Warm regions raised the class score.")
    ]


def write_report(output_dir, runs, x_test, progress=None, wide=None):
    """Every figure, report.html and summary.md from saved runs; returns the figure paths.

    runs: the runner's metrics records, best validation accuracy first, each with its
    run_dir and history. x_test: the test images (the best run's figures show some).
    progress: (finished, planned) runs while a grid is still running, for the page's top.
    wide: the variants whose sweeps grew by the protocol (--wide-sweep; None: all of them).
    With a learning-rate sweep, variants are compared at their chosen multiplier (on
    validation); the sweep's other runs appear in the tuning section and the runs table.
    """
    output_dir, class_names, display = Path(output_dir), CLASS_NAMES, DISPLAY
    # the design's three choices and any factor beyond them that the runs' records name
    factors = {**FACTORS, **{f: tuple(LEVELS[f]) for f in extra_factors(runs)}}
    every_run = claims.with_history_measures(runs)
    runs = lr_tuning.tuned_runs(every_run)
    ok = [r for r in runs if r["status"] == "ok"]
    if not ok:
        return []
    best = ok[0]
    multiplier = lr_multiplier_of(best)  # the best run of a tuned grid may be a sweep point
    best_run = f"seed {best['seed']}" + (f", lr x{multiplier:g}" if multiplier != 1 else "")
    n_seeds = len({r["seed"] for r in ok})
    per_variant = mean_over_seeds(ok) if n_seeds > 1 else ok
    over = f" (mean over {seeds_phrase(ok)})" if n_seeds > 1 else ""

    mean_recall = np.mean([[r["classification_report"][c]["recall"] for c in class_names]
                           for r in ok], axis=0)
    hardest = ", ".join(f"{class_names[i]} ({100 * mean_recall[i]:.1f}%)"
                        for i in np.argsort(mean_recall)[:3])
    recalls = {}
    for r in ok:
        recalls.setdefault(variant_label(r), []).append(
            [r["classification_report"][c]["recall"] for c in class_names])
    if n_seeds == 1:
        recalls = {f"{r_label} (seed {ok[0]['seed']})": v for r_label, v in recalls.items()}
    figures = [
        (plot_training_curves(per_variant, output_dir / "model_comparison.png",
                              f"mean over {seeds_phrase(ok)} per epoch; star: best epoch of the mean "
                              "validation curve" if n_seeds > 1 else None),
         f"Training and validation accuracy and loss per epoch for every variant{over}; the "
         "star marks the epoch with the best validation accuracy, whose checkpoint was evaluated."),
        *best_run_figures(best, best_run, x_test, output_dir),
        (plot_per_class_accuracy({k: np.mean(v, axis=0) for k, v in recalls.items()},
                                 class_names, output_dir / "per_class_accuracy.png",
                                 *([f"Per-class test accuracy of every variant, mean over {seeds_phrase(ok)} "
                                    "(best validation run's variant first)"]
                                   if n_seeds > 1 else [])),
         f"Per-class test accuracy of every variant{over}; hardest on average: {hardest}."),
    ]
    comparison, effects, pair_effects, points = statistics_sections(
        runs, factors, display, tuned=lr_tuning.is_sweep(every_run))
    beyond_tables, beyond_lines, beyond_figures = beyond_accuracy(ok, factors, display, output_dir)
    if effects:
        figures.append((
            plot_factor_effects(effects, pair_effects, points, output_dir / "factor_effects.png",
                                display, f"Which design choices matter? ({seeds_phrase(ok)} per variant)"),
            f"Left: the effect of each design choice on test accuracy with its {fa.CONFIDENCE:.0%} "
            "interval from the factorial model (red where the interval excludes zero). Right: each variant's "
            "test accuracy per seed (points) with its mean and interval."))
    effect_lines = [fa.effect_sentence(e, display) for e in effects + pair_effects]
    (claims_tables, claims_figures), study_parts = study_sections(every_run, runs, factors,
                                                                  output_dir, display, wide)

    warnings = [w for w in (progress_warning(progress), smoke_check_warning(best.get("settings", {})))
                if w]
    sections = [
        Section("Fashion-MNIST CNN design-choice lab: results", 1, warnings, [
            f"Best on validation: **{best['name']}** ({best_run}), test accuracy "
            f"{100 * best['test_accuracy']:.2f}%.", compute_sentence(every_run),
            *filter(None, [machine_sentence(every_run)])]),
        # the answers first (claims, accuracy, effects), then what they rest on, then reference
        *[table_section(t) for t in claims_tables[:-1]],
        *([dataclasses.replace(table_section(claims_tables[-1]), figures=claims_figures)]
          if claims_tables else []),
        *[table_section(t) for t in comparison.accuracy],  # variants over seeds, factor effects
        *([Section("What the data support", bullets=effect_lines)] if effect_lines else []),
        *[dataclasses.replace(table_section(t), figures=f) for t, f in study_parts],
        table_section(comparison.speed)]
    if beyond_tables:
        sections += [Section("Beyond accuracy: calibration and shift robustness",
                             paragraphs=[BEYOND_INTRO], bullets=beyond_lines),
                     *[table_section(t, level=3) for t in beyond_tables],
                     Section(figures=beyond_figures)]
    sections += [Section("Settings", table=settings_rows(best), paragraphs=[
                     f"Recipe and environment of the best run, {best['name']} ({best_run}); "
                     "every run's own are in its settings.json and metrics.json."]),
                 Section("Runs (best validation accuracy first)", table=results_rows(every_run)),
                 Section(f"Classification report of {best['name']} ({best_run})",
                         table=classification_rows(best["classification_report"], class_names)),
                 Section("Figures", figures=figures)]
    atomic_write(output_dir / "summary.md", to_markdown(sections))
    atomic_write(output_dir / "report.html", to_html(sections, "Fashion-MNIST CNN lab"))
    return [p for p, _ in figures + beyond_figures + claims_figures
            + [f for _, fs in study_parts for f in fs]]


def figure_html(path, caption):
    """A figure embedded as base64, so report.html is one self-contained file."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return (f"<figure><img alt='{path.stem}' src='data:image/png;base64,{data}'>"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")
