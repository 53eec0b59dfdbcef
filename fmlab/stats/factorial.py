"""The one model behind every effect the lab reports: the replicated factorial with seed blocks.

The grid is a full factorial of the design choices (any number of levels each), repeated
over seeds; a seed fixes a run's split, initialisation and data order for every variant, so
seeds are blocks. The textbook analysis (Montgomery, Design and Analysis of Experiments,
ch. 5-7) is OLS with every interaction of the factors plus a seed term,

    metric ~ C(activation, Sum) * C(downsampling, Sum) * C(optimizer, Sum) + C(seed, Sum)

fitted with statsmodels. Every effect is a contrast of the model's cell means, averaged with
equal weight over the other factors' levels and the seeds:

- a main effect of a level: its cells' mean minus the factor's reference level's (the first
  level: ReLU, max pooling, Adam), averaged over the other factors;
- a context effect: the same difference within one combination of the other factors (the
  forest plot's rows), so heterogeneity is seen, not averaged away;
- an interaction: how one factor's effect changes between two levels of another (zero when
  the effects add up), averaged over the third factor.

Each interval uses the model's residual variance, on its residual degrees of freedom
(7 x (seeds - 1) for the seed's 2^3 grid). With one seed, or a grid with a missing cell,
there is no residual to estimate the noise from: effects are then plain differences of the
cell means, with no interval (and no verdict).

Pure pandas/statsmodels on the runner's result rows; no Keras, no drawing.
"""

import dataclasses
import functools
import itertools

import numpy as np
import pandas as pd
import patsy
import statsmodels.formula.api as smf
from scipy import stats

CONFIDENCE = 0.95
POWER = 0.8  # of the a-priori detectable effect


@dataclasses.dataclass(frozen=True)
class Design:
    """The runs of one metric, and the fitted model where the design allows one."""
    factors: dict     # factor -> its levels present in the runs, reference first (>= 2 each)
    fixed: dict       # factor -> its one level, where the runs do not vary it
    seeds: tuple
    frame: pd.DataFrame
    result: object    # statsmodels OLS results, or None (no residual: no intervals)

    @property
    def df(self):
        return float(self.result.df_resid) if self.result is not None else 0.0

    @property
    def sigma(self):
        """The residual standard deviation: the noise of one run, after cells and seeds."""
        return float(np.sqrt(self.result.scale)) if self.result is not None else float("nan")

    @functools.cached_property
    def grid(self):
        """Every (cell, seed) of the complete design: the rows contrasts average over."""
        names = list(self.factors)
        combos = itertools.product(*self.factors.values(), self.seeds)
        return pd.DataFrame([dict(zip([*names, "seed"], c)) for c in combos],
                            columns=[*names, "seed"])

    @functools.cached_property
    def exog(self):
        """The model's design matrix at every grid row (a contrast is weights @ exog)."""
        spec = self.result.model.data.model_spec
        return np.asarray(patsy.build_design_matrices([spec], self.grid)[0])


def ok_rows(rows):
    return [r for r in rows if r.get("status") == "ok"]


def term(factor):
    return f"C({factor}, Sum)"


def fit(rows, factors, metric, additive=None):
    """The design of one metric over the finished runs that have it. factors: {factor: levels
    in order, reference first}; levels absent from the runs are dropped, a factor left with
    one level is held fixed. The model is fitted when every cell has a run and a residual
    remains (in practice: two seeds or more). additive: a factor that enters without
    interactions, so that its variation over the other factors' combinations is the error
    (for one-seed measures such as the learning-rate window: a paired comparison over the
    contexts)."""
    records = [{**{f: r[f] for f in factors}, "seed": str(r["seed"]), "y": float(r[metric])}
               for r in ok_rows(rows) if r.get(metric) is not None and np.isfinite(r[metric])]
    frame = pd.DataFrame(records, columns=[*factors, "seed", "y"])
    present = {f: [level for level in levels if level in set(frame[f])]
               for f, levels in factors.items()}
    varying = {f: levels for f, levels in present.items() if len(levels) > 1}
    fixed = {f: levels[0] for f, levels in present.items() if len(levels) == 1}
    seeds = tuple(sorted(set(frame["seed"]), key=int))
    result = None
    cells = set(map(tuple, frame[list(varying)].drop_duplicates().values)) if varying else set()
    if varying and len(cells) == np.prod([len(v) for v in varying.values()]):
        crossed = [f for f in varying if f != additive]
        formula = ("y ~ " + (" * ".join(map(term, crossed)) or "1")
                   + (f" + {term(additive)}" if additive in varying else "")
                   + (" + C(seed, Sum)" if len(seeds) > 1 else ""))
        model = smf.ols(formula, frame).fit()
        if model.df_resid > 0:
            result = model
    return Design(varying, fixed, seeds, frame, result)


# ----------------------------------------------------------------------------- contrasts

def _weights(grid, condition):
    """Equal weights on the grid rows where condition holds (a boolean Series), else 0."""
    mask = condition.to_numpy(dtype=float)
    return mask / mask.sum()


def estimate(design, weights_plus, weights_minus):
    """(effect, standard error) of sum(w+ * cell means) - sum(w- * cell means) over the grid:
    from the model where fitted, else from the observed cell means (no standard error)."""
    grid = design.grid
    if design.result is not None:
        contrast = (weights_plus - weights_minus) @ design.exog
        test = design.result.t_test(contrast[None, :])
        return float(np.squeeze(test.effect)), float(np.squeeze(test.sd))
    names = list(design.factors)
    means = design.frame.groupby(names)["y"].mean()
    keys = [tuple(row) for row in grid[names].itertuples(index=False)]
    cell = np.array([means.get(k if len(k) > 1 else k[0], np.nan) for k in keys])
    value = 0.0  # a missing cell drops out and the weights of the rest are renormalised
    for weights, sign in ((weights_plus, 1), (weights_minus, -1)):
        value += sign * float(np.nansum(cell * weights) / max(weights[~np.isnan(cell)].sum(), 1e-12))
    return value, float("nan")


def _entry(design, plus, minus, **fields):
    effect, se = estimate(design, plus, minus)
    entry = {**fields, "effect": effect, "se": se, "df": design.df, "sigma": design.sigma}
    return {**entry, **interval(entry)}


def interval(entry, confidence=CONFIDENCE):
    """low, high, p of an entry's t interval on its degrees of freedom (NaN without one)."""
    se, df = entry["se"], entry["df"]
    if not (df > 0 and np.isfinite(se)):
        return {"low": float("nan"), "high": float("nan"), "p": float("nan")}
    half = stats.t.ppf(0.5 + confidence / 2, df) * se
    p = 2 * stats.t.sf(abs(entry["effect"]) / se, df) if se > 0 else 0.0
    return {"low": entry["effect"] - half, "high": entry["effect"] + half, "p": float(p)}


def main_effects(design):
    """Each non-reference level against its factor's reference, averaged over the rest."""
    grid, found = design.grid, []
    for factor, levels in design.factors.items():
        reference = levels[0]
        for level in levels[1:]:
            found.append(_entry(design, _weights(grid, grid[factor] == level),
                                _weights(grid, grid[factor] == reference),
                                factor=factor, level=level, reference=reference))
    return found


def context_effects(design, factor, level, reference):
    """The level's effect within each combination of the other factors' levels, and a Wald F
    test that they are all equal (the interactions with this factor): ([entry with its
    'context' {factor: level}], p of the test or NaN). factor None: each cell's own mean, and
    the test that all cells are equal. Where the model is additive in the factor (fit's
    `additive`) it gives every context the average: each context is then its observed
    difference, without an interval, and there is no test."""
    grid = design.grid
    others = [f for f in design.factors if f != factor]
    contexts = [dict(zip(others, levels))
                for levels in itertools.product(*(design.factors[f] for f in others))]
    weights = []
    for context in contexts:
        inside = pd.Series(True, index=grid.index)
        for f, value in context.items():
            inside &= grid[f] == value
        if factor is None:
            weights.append((_weights(grid, inside), np.zeros(len(grid))))
        else:
            weights.append((_weights(grid, inside & (grid[factor] == level)),
                            _weights(grid, inside & (grid[factor] == reference))))
    p, estimated = float("nan"), design
    if design.result is not None and len(contexts) > 1:
        rows = [plus - minus for plus, minus in weights]
        restrictions = np.array([(r - rows[0]) @ design.exog for r in rows[1:]])
        if np.linalg.matrix_rank(restrictions, tol=1e-10) > 0:
            p = float(design.result.f_test(restrictions).pvalue)
        else:  # additive by the model
            estimated = dataclasses.replace(design, result=None)
    entries = [_entry(estimated, plus, minus, factor=factor, level=level, reference=reference,
                      context=context) for context, (plus, minus) in zip(contexts, weights)]
    return entries, p


def interactions(design):
    """For each pair of factors (A, B) and each non-reference pair of levels (a, b): A's
    effect (a vs A's reference) at b minus at B's reference, averaged over the rest."""
    grid, found = design.grid, []
    for a, b in itertools.combinations(design.factors, 2):
        a0, b0 = design.factors[a][0], design.factors[b][0]
        for la, lb in itertools.product(design.factors[a][1:], design.factors[b][1:]):
            def w(level_a, level_b):
                return _weights(grid, (grid[a] == level_a) & (grid[b] == level_b))
            plus = w(la, lb) + w(a0, b0)
            minus = w(a0, lb) + w(la, b0)
            found.append(_entry(design, plus, minus, factor=a, level=la, reference=a0,
                                by=b, by_level=lb, by_reference=b0))
    return found


def grand_mean(design):
    """The mean of the cell means (equal weights), with its standard error."""
    grid = design.grid
    weights = _weights(grid, pd.Series(True, index=grid.index))
    return _entry(design, weights, np.zeros_like(weights))


# ----------------------------------------------------------------------------- families, power

def family_adjusted(entries, confidence=CONFIDENCE):
    """The entries read together, with Bonferroni intervals added (each at
    1 - (1 - confidence)/m, so all m hold at once with the stated confidence)."""
    m = len(entries)
    each = 1 - (1 - confidence) / max(m, 1)
    adjusted = []
    for e in entries:
        wide = interval(e, each)
        adjusted.append({**e, "family_size": m, "family_low": wide["low"],
                         "family_high": wide["high"]})
    return adjusted


def power(effect, se, df, alpha):
    """Power of the two-sided t test at level alpha for a true effect, given the estimate's
    standard error and degrees of freedom (noncentral t)."""
    critical = stats.t.ppf(1 - alpha / 2, df)
    shift = effect / se
    return float(stats.nct.sf(critical, df, shift) + stats.nct.cdf(-critical, df, shift))


def detectable_effect(se, df, alpha, target=POWER):
    """The smallest true effect detected with the target power: a property of the design and
    the residual spread, computed before looking at the estimate (Hoenig & Heisey 2001)."""
    if not (df > 0 and np.isfinite(se) and se > 0):
        return float("nan")
    low, high = 0.0, 20 * se
    for _ in range(60):  # bisection on the monotone power curve
        middle = (low + high) / 2
        low, high = (middle, high) if power(middle, se, df, alpha) < target else (low, middle)
    return high


def seeds_needed(entry, seeds_now, cells, smallest, alpha, target=POWER, most=50):
    """Seeds per variant at which the smallest effect of interest is detected with the target
    power: the standard error shrinks as 1/sqrt(seeds), the residual df is (cells - 1) x
    (seeds - 1). None when even `most` seeds would not do."""
    if not (entry["df"] > 0 and np.isfinite(entry["se"])):
        return None
    for seeds in range(2, most + 1):
        se = entry["se"] * np.sqrt(seeds_now / seeds)
        if power(smallest, se, (cells - 1) * (seeds - 1), alpha) >= target:
            return seeds
    return None
