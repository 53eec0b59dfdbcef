"""The classic claims at every level of a factor beyond the design's three (the training
budget, batch norm on or off, ...), and whether each verdict depends on it: the claim x
factor interaction of one factorial model over every level, read together over the claims.

Pure statsmodels on the runner's records (fmlab.stats.claims defines the claims); no Keras,
no drawing.
"""

import numpy as np

from fmlab.core.levels import LEVELS
from fmlab.stats import factorial
from fmlab.stats.claims import CLAIM_LEVELS, CLAIMS, claims_table


def claims_by_level(runs, factor, sensitivity=None, confidence=factorial.CONFIDENCE):
    """The claims at every level of a factor beyond the design's three (e.g. the training
    budget), and each claim's interaction with it: {"levels": {level: claims_table},
    "interactions": [entry per claim]}. An interaction entry is the claim's signed effect at
    each non-reference level minus at the reference level (the factor's first), from one
    factorial model over every level with seeds as blocks, with Bonferroni intervals over
    the claims ("does the verdict depend on the factor?"). 5b (one seed
    per variant) has no interaction test."""
    present = {r[factor] for r in runs if factor in r}
    levels = [level for level in LEVELS[factor] if level in present]  # the registry's order
    tables = {}
    for level in levels:
        at = [r for r in runs if r.get(factor) == level]
        names = {r["name"] for r in at}
        tables[level] = claims_table(at, [e for e in sensitivity or [] if e["name"] in names]
                                     or None, confidence)
    entries = []
    ok = [r for r in factorial.ok_rows(runs) if all(r.get(f) in v for f, v in CLAIM_LEVELS.items())]
    for claim in CLAIMS:
        if claim.metric == "lr_width" or len(levels) < 2:
            continue
        factors = {f: ((claim.other, claim.favoured) if f == claim.factor else v)
                   for f, v in CLAIM_LEVELS.items()}
        rows = ok
        if claim.favoured == claim.other:  # a level's own value (2a): the factor's effect on it
            rows = [r for r in ok if r[claim.factor] == claim.favoured]
            del factors[claim.factor]
        design = factorial.fit(rows, {**factors, factor: tuple(levels)}, claim.metric)
        if design.result is None or factor not in design.factors:
            continue
        if claim.favoured == claim.other:
            found = [e for e in factorial.main_effects(design) if e["factor"] == factor]
        else:
            found = [e for e in factorial.interactions(design)
                     if {e["factor"], e["by"]} == {claim.factor, factor}]
        for e in found:
            level = e["level"] if e["factor"] == factor else e["by_level"]
            effect = claim.sign * e["effect"]
            entries.append({"claim": claim.label, "level": level, "reference": levels[0],
                            "effect": effect, "se": e["se"], "df": e["df"], "scale": claim.scale,
                            **factorial.interval({**e, "effect": effect})})
    entries = [{**wide, "depends": bool(wide["family_low"] > 0 or wide["family_high"] < 0)}
               for wide in factorial.family_adjusted(entries, confidence)]
    for entry in entries:
        entry["separate"] = separate_variances(entry, tables, len(entries), confidence)
    return {"levels": tables, "interactions": entries}


def separate_variances(entry, tables, family, confidence=factorial.CONFIDENCE):
    """The same difference read with each level's own residual variance: the claim's effect
    at the level minus at the reference from the two levels' own fits, its standard error
    sqrt(se1^2 + se2^2) on Welch-Satterthwaite degrees of freedom, Bonferroni over `family`.
    The pooled test assumes one noise level for every level (a short budget may be noisier);
    this is its check. None where a level's claim has no standard error."""
    rows = [next((r for r in tables[lv] if r["claim"] == entry["claim"]), None)
            for lv in (entry["reference"], entry["level"])]
    if not all(r and r.get("modelled") and np.isfinite(r["se"]) and r["df"] > 0 for r in rows):
        return None
    (se1, df1), (se2, df2) = [(r["se"], r["df"]) for r in rows]
    se = float(np.hypot(se1, se2))
    welch = {"effect": rows[1]["effect"] - rows[0]["effect"], "se": se,
             "df": float(se ** 4 / (se1 ** 4 / df1 + se2 ** 4 / df2))}
    wide = factorial.interval(welch, 1 - (1 - confidence) / family)
    return {**welch, **factorial.interval(welch, confidence), "family_low": wide["low"],
            "family_high": wide["high"], "depends": bool(wide["low"] > 0 or wide["high"] < 0),
            "sigma": (rows[0]["sigma"], rows[1]["sigma"])}
