"""How the report writes numbers and counts (one place for each phrase the sections share)."""

import re

import numpy as np


def format_interval(low, high, scale=100):
    """'[low, high]' of an effect, signed, x scale; n/a where there is no interval."""
    return f"[{scale * low:+.2f}, {scale * high:+.2f}]" if np.isfinite(low) else "n/a"


def counted(n, noun):
    """'1 run', '3 runs'."""
    return f"{n} {noun}{'s' * (n != 1)}"


def seeds_phrase(runs):
    """'5 seeds', or '1-5 seeds' while the variants have run on different numbers of them
    (a grid still running its seeds)."""
    seeds = {}
    for r in runs:
        seeds.setdefault(r["name"], set()).add(r["seed"])
    low, high = min(map(len, seeds.values()), default=0), max(map(len, seeds.values()), default=0)
    return counted(high, "seed") if low == high else f"{low}-{high} seeds"


def significance_words(effect):
    """How a factor-table row reads: whether its intervals exclude zero."""
    if not np.isfinite(effect["low"]):
        return "no interval: one seed"
    if effect["family_significant"]:
        return "significant, also after Bonferroni"
    return "significant at 95%, not after Bonferroni" if effect["significant"] else "not significant"


def short_verdict(verdict):
    """A verdict's words without its reasons: 'inconclusive (this design detects ...)' ->
    'inconclusive', 'no practical effect (within ...); leans for' -> 'no practical effect'."""
    return re.split(r" \(|;|:", verdict, maxsplit=1)[0]
