"""The documentation points at files that exist: every relative link and image of the README,
of the reference pages in docs/ and of the committed summaries (a figure renamed or removed
with a new grid must not leave a dead link behind)."""

import json
import re
from pathlib import Path

import pytest

from conftest import ROOT

LINK = re.compile(r"\]\(([^)\s]+)\)")  # [text](target) and ![alt](target)


def relative_links(markdown_path):
    """Targets of the Markdown links of a file that are paths inside the repository."""
    paths = {t.split("#")[0] for t in LINK.findall(markdown_path.read_text())
             if not re.match(r"[a-z]+:", t)}  # not https:, mailto:, ...
    return sorted(paths - {""})  # "" was a link to an anchor of the same page


DOCUMENTS = ["README.md", *sorted({str(p.relative_to(ROOT)) for pattern in ("docs/*.md", "docs/**/summary.md")
                                   for p in ROOT.glob(pattern)})]


@pytest.mark.parametrize("document", DOCUMENTS)
def test_every_relative_link_exists(document):
    markdown = ROOT / document
    links = relative_links(markdown)
    missing = [t for t in links if not (markdown.parent / t).exists()]
    assert links, f"{document} has no relative links: the pattern no longer matches"
    assert not missing, f"{document} links to files that are not in the repository: {missing}"


def github_anchor(heading):
    """The id GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_anchor_link_of_the_readme_names_a_heading():
    text = (ROOT / "README.md").read_text()
    prose = re.sub(r"```.*?```", "", text, flags=re.S)  # no headings inside code blocks
    anchors = {github_anchor(h) for h in re.findall(r"^#+ (.+)$", prose, flags=re.M)}
    targets = {t[1:] for t in LINK.findall(text) if t.startswith("#")}
    assert targets, "the README links to none of its sections: the pattern no longer matches"
    assert targets <= anchors, f"links to no heading: {sorted(targets - anchors)}"


def test_readme_quotes_the_committed_grid_verbatim():
    """The README's results tables and compute line are copies of docs/summary.md, so a new
    grid cannot leave old numbers in the README unnoticed (and no number is typed by hand)."""
    readme = (ROOT / "README.md").read_text().splitlines()
    summary = set((ROOT / "docs" / "summary.md").read_text().splitlines())
    quoted = [line for line in readme
              if (line.startswith("| CNN_") and "±" in line)           # variants over seeds
              or re.match(r"\| (\w+ vs \w+|\w+ x \w+) ", line)]       # factor effects
    compute = [line[2:] for line in readme if line.startswith("> Compute:")]
    assert len(quoted) >= 8 + 6 and len(compute) == 1, "the README no longer quotes the grid"
    # a study's claims table is quoted whole in the README, its tuning table in findings.md
    claim_row, tuning_row = re.compile(r"\| \d[a-z]?\. "), re.compile(r"\| CNN_\w+ \| x\d")
    findings = (ROOT / "docs" / "findings.md").read_text().splitlines()
    study_rows = [line for line in readme if claim_row.match(line)]
    tuning_rows = [line for line in findings if tuning_row.match(line)]
    missing = sorted(line for line in summary if (claim_row.match(line) and line not in readme)
                     or (tuning_row.match(line) and line not in findings))
    assert not missing, f"docs/summary.md rows the README or findings.md do not quote: {missing}"
    stale = [line for line in quoted + compute + study_rows + tuning_rows if line not in summary]
    assert not stale, f"README or findings.md lines not in docs/summary.md: {stale}"


def test_the_readme_is_a_front_page():
    """The README stays short enough to read: the longer readings live in docs/."""
    size = len((ROOT / "README.md").read_bytes())
    assert size <= 20_000, f"README.md is {size:,} bytes; move readings to docs/"


def test_the_committed_grid_is_what_the_readme_command_trains():
    """The README says which command made docs/ ("made by `python fashion_mnist_cnn.py
    ...`"): every committed run's settings are the recipe that command asks for today on a
    CPU, so changing a default without re-running the grid, or without giving the flags that
    keep the grid's protocol in the README, fails here (the runner would refuse to mix them)."""
    import dataclasses
    import shlex

    import fashion_mnist_cnn as fm
    from fmlab.store.run_store import settings_of
    from fmlab.run.recipe import Recipe, grid_precision

    quoted = re.findall(r"made by `python fashion_mnist_cnn\.py ([^`]*)`",
                        " ".join((ROOT / "README.md").read_text().split()))
    assert len(quoted) == 1, "the README no longer says which command made docs/"
    args = fm.parse_args(shlex.split(quoted[0]))
    assert args.output_dir == Path("docs")
    # auto resumes a folder in the precision of its runs, on whichever machine
    args.precision = grid_precision(args.precision, ROOT / "docs")[0]
    expected = dataclasses.asdict(Recipe.from_args(args))
    recorded = sorted(ROOT.glob("docs/runs/*/seed*/settings.json"))
    assert len(recorded) >= 8 * len(args.seeds), "the committed grid is 8 variants x its seeds"
    differing = [str(p.relative_to(ROOT)) for p in recorded  # read as the runner reads them
                 if settings_of({"settings": json.loads(p.read_text())}) != expected]
    assert not differing, f"made with other settings than the README's command: {differing}"


def summary_numbers():
    """What the prose quotes from docs/summary.md: the seeds sentence, each variant's mean
    test accuracy and standard deviations, and the tuning widths."""
    summary = (ROOT / "docs" / "summary.md").read_text()
    seeds = re.search(r"residual standard deviation is ([\d.]+) pp \((\d+) df\); with (\d+) seeds per "
                      r"variant a main effect of ±([\d.]+) pp", summary)
    variants = re.findall(r"^\| (CNN_\w+) \| \d+ \| ([\d.]+)% ± ([\d.]+) \[[^|]*\| ([\d.]+)% ± ([\d.]+)",
                          summary, flags=re.M)
    return summary, seeds, {name: tuple(map(float, values)) for name, *values in variants}


def test_the_prose_quotes_the_numbers_of_the_summary():
    """Sentences of the README and findings.md that restate summary.md's numbers (the seeds'
    power, the variants' range and spread, the last variant) agree with it."""
    readme = " ".join((ROOT / "README.md").read_text().split())
    findings = " ".join((ROOT / "docs" / "findings.md").read_text().split())
    summary, seeds, variants = summary_numbers()
    assert seeds and len(variants) == 8, "summary.md's patterns no longer match"
    sd, df, n, detect = seeds.groups()
    assert f"five detect ±{detect} pp" in readme
    assert f"residual standard deviation is {sd} pp ({df} df) and the design detects ±{detect} pp" in findings
    tests = sorted(v[0] for v in variants.values())
    assert f"{tests[0]:.2f}-{tests[-1]:.2f}% mean test accuracy" in readme
    val_sd = sorted(v[3] for v in variants.values())
    assert f"by {val_sd[0]:.2f}-{val_sd[-1]:.2f} pp (the standard deviations of validation" in findings
    last = min(variants, key=lambda name: variants[name][0])
    best = max(variants.values())[0]
    assert (f"{last} ends last of the eight on test ({tests[0]:.2f}%)" in findings
            and f"{best - tests[0]:.2f} pp of test accuracy below the best" in findings)
