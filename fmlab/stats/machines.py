"""Did the machine a run trained on move its numbers?

A study resumed or split across machines mixes CPUs (or GPUs) whose kernels round
differently (bfloat16 on Intel AMX against AVX512-BF16, say). The design does not balance
them: which machine ran a run is an accident of when it ran. So the machine enters a model
beside what the design holds fixed -- each run's cell (its variant, learning rate and any
further factor: everything but the seed) and its seed (split and initialisation) -- and its
terms are read like any effect: an estimate with an interval, and one F test for all of
them. Only cells run on more than one seed inform it.
"""

import warnings

import pandas as pd
import statsmodels.formula.api as smf
from scipy import stats

from fmlab.stats.factorial import CONFIDENCE, ok_rows
from fmlab.store.run_store import device_of, lr_multiplier_of


def machine_effect(runs, metric="test_accuracy", confidence=CONFIDENCE):
    """{"machines": [(machine, runs)] most runs first (the first is the reference),
    "effects": [{"machine", "estimate", "low", "high"}] (each other machine minus the
    reference), "p" (F test of every machine term), "df" (residual df)}; None with one
    machine, or where the design leaves the machine inestimable (every cell on one machine)
    or no residual."""
    rows = [{"y": float(r[metric]), "cell": f"{r['name']} x{lr_multiplier_of(r):g}",
             "seed": str(r["seed"]), "machine": device_of(r)}
            for r in ok_rows(runs) if r.get(metric) is not None and device_of(r)]
    frame = pd.DataFrame(rows, columns=["y", "cell", "seed", "machine"])
    counts = frame["machine"].value_counts()
    if len(counts) < 2:
        return None
    reference = counts.index[0]
    blocks = "C(cell)" + (" + C(seed)" if frame["seed"].nunique() > 1 else "")
    reduced = smf.ols(f"y ~ {blocks}", frame).fit()
    with warnings.catch_warnings():  # a rank-deficient fit is told apart below
        warnings.simplefilter("ignore")
        full = smf.ols(f"y ~ {blocks} + C(machine, Treatment({reference!r}))", frame).fit()
    if full.df_resid < 1 or full.df_model - reduced.df_model < len(counts) - 1:
        return None  # a machine term is a combination of the cells and seeds
    f_value, p, _ = full.compare_f_test(reduced)
    half = stats.t.ppf((1 + confidence) / 2, full.df_resid)
    effects = []
    for machine in counts.index[1:]:
        name = f"C(machine, Treatment({reference!r}))[T.{machine}]"
        estimate, se = float(full.params[name]), float(full.bse[name])
        effects.append({"machine": machine, "estimate": estimate,
                        "low": estimate - half * se, "high": estimate + half * se})
    return {"machines": list(counts.items()), "effects": effects, "p": float(p),
            "df": int(full.df_resid)}
