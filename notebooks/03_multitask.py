# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 03 · Multitask learning: naive, per level, re-weighted (paper §2.4, §3.3, Fig 3, Fig S5)
#
# > **Run time** (default profile, 2 CPU cores; `benchmarks/run_times.csv`): `./run_all.sh` first trains every experiment (19 min on a cold cache, 2 Dask workers), then this notebook takes 13 s; warm: 12 s. Opened alone on a cold cache, it trains what it needs in its kernel, one network after another.
#
# Three ways of using the levels of the ICD-9-CM hierarchy as tasks (spec section 7), all tuned on NDCG:
#
# * **naive multitask** (`naive_ndcg`): one network with one output per code of every level;
# * **per level** (`per_level_ndcg`): four networks, on chapters, subchapters, 3-digit and billing codes only;
#   each level is scored with its own network's predictions;
# * **re-weighted multitask** (`reweighted_ndcg`): weighted BCE giving each level group the same total weight.
#
# The paper's claims (§3.3): the re-weighted model degrades NDCG significantly at every level; the naive
# multitask model is on average at least as good as the per-level models, within error bounds for NDCG, and
# its RE@R advantage is significant (paired t-test over the 3 folds) only at the billing level for high
# recalls; one multitask network costs less time than four per-level networks.
#
# Fig S5 shows RE@R per level for every method of sections 3.3–3.5 (the hierarchical and class-imbalance
# models of notebooks 04 and 05 too); experiments are cached, so each is trained once whichever notebook runs first.

# %% tags=["parameters"]
profile = "default"
data = "synthetic"
figures_dir = "../figures/default"
tables_dir = "../tables/default"
cache_dir = None

# %%
import logging

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from cacicd.data import sources as cdata
from cacicd.evaluation import compare
from cacicd.experiments import engine as E
from cacicd.experiments.registry import LEVEL_PARTS
from cacicd.paper import report
from cacicd.paper import subgroups as S
from cacicd.paper import verdicts as V
from cacicd.paper.claims import check, configure, save_claims
from cacicd.paper.figures import save_figure, save_table, setup

P, CACHE = setup(profile, data, cache_dir, note='Numbers resemble MIMIC-III by construction; they are not MIMIC-III.', level=logging.INFO)

# %%
LEVELS = ["chapter", "subchapter", "3digit", "billing"]
RS = [10, 25, 33, 50, 66, 75, 90, 100]
RE_METRICS = [f"re@{r}" for r in RS]
FAMILIES = {
    "multitask (§3.3)": ["per_level_ndcg", "reweighted_ndcg"],
    "hierarchical (§3.4)": ["hierl2_ndcg", "treemin_ndcg", "mcloss_ndcg", "rolldown_ndcg", "rollup_ndcg"],
    "class imbalance (§3.5)": ["focal_ndcg", "outl2_ndcg", "irw_ndcg", "irnw_ndcg"],
}
LABELS = {name: report.experiment_short(name)
          for name in ["naive_ndcg", *(m for models in FAMILIES.values() for m in models)]}

ds = cdata.load_data(data, P, CACHE)
configure(P.name, cdata.min_test_stays(ds, P, CACHE))  # withholds verdicts on smoke / tiny test folds
results = {name: E.run(name, P, ds, cache_dir=CACHE) for name in LABELS}
tidy = compare.tidy_results(results)
print(f"{len(results)} experiments × {P.n_folds} folds; {ds.n_stays:,} stays, {len(ds.codes):,} codes")

# %% [markdown]
# ## Fig 3 — relative NDCG per level vs naive multitask
# Bars: 100·(NDCG/NDCG_naive − 1), mean over folds ± SEM (scaled by 100/NDCG_naive). Below each level,
# the naive model's absolute NDCG.

# %%
rel = compare.relative(tidy, "naive_ndcg", levels=LEVELS)
fig3_models = ["per_level_ndcg", "reweighted_ndcg"]
fig3 = rel[rel.model.isin(["naive_ndcg", *fig3_models]) & rel.level.isin(LEVELS) & (rel.metric == "ndcg")]
save_table(fig3, "fig3_relative_ndcg_multitask", tables_dir)
fig, ax = plt.subplots(figsize=(7, 4))
S.relative_bar_chart(ax, fig3, fig3_models, LEVELS, "naive_ndcg", labels=LABELS)
ax.set_title("Fig 3 · multitask strategies vs naive multitask (NDCG)")
fig.tight_layout()
save_figure(fig, "fig3_relative_ndcg_multitask", figures_dir, data)

# %%
ndcg_tests = S.paired_ttests_vs(tidy, fig3_models, "naive_ndcg", ["ndcg"], LEVELS)
save_table(ndcg_tests, "fig3_ndcg_paired_ttests", tables_dir)
ndcg_tests

# %% [markdown]
# ## Fig S5 — RE@R per level for every method, and the paired t-tests naive vs per level
# Relative RE@R vs naive multitask (positive: fewer rank errors than naive), mean over folds ± SEM.
# Stars mark the R where the paired t-test naive vs per level has p < 0.05.

# %%
ttests = S.paired_ttests(tidy, "naive_ndcg", "per_level_ndcg", RE_METRICS, LEVELS)
ttable = ttests.rename(columns={"mean_a": "mean_naive", "mean_b": "mean_per_level",
                                "mean_diff": "mean_diff_naive_minus_per_level"})[
    ["R", "level", "mean_naive", "mean_per_level", "mean_diff_naive_minus_per_level", "t", "p", "n_folds"]]
save_table(ttable, "figS5_ttests_naive_vs_per_level", tables_dir)
figS5 = rel[rel.metric.isin(RE_METRICS)].assign(R=lambda d: d.metric.map(compare.re_of))
save_table(figS5, "figS5_relative_re_at_r", tables_dir)
ttable

# %%
fig, axes = plt.subplots(len(FAMILIES), len(LEVELS), figsize=(14, 9), sharex=True)
sig = S.significant(ttests)
for i, (family, models) in enumerate(FAMILIES.items()):
    for j, level in enumerate(LEVELS):
        ax = axes[i, j]
        ax.axhline(0, color="0.3", lw=0.8)
        for k, m in enumerate(models):
            d = figS5[(figS5.model == m) & (figS5.level == level)].sort_values("R")
            ax.errorbar(d.R, d.rel, yerr=d.rel_sem.fillna(0), marker="o", ms=3, capsize=2, label=LABELS[m],
                        color=f"C{k}")
        if family.startswith("multitask"):
            for r in sig[sig.level == level].R:
                ax.annotate("*", (r, 0), ha="center", va="bottom", fontsize=14, color="C0")
        ax.set_xticks(RS)
        ax.tick_params(labelsize=7)
        if i == 0:
            ax.set_title(level)
        if j == 0:
            ax.set_ylabel(f"{family}\nrelative RE@R (%)", fontsize=8)
        if i == len(FAMILIES) - 1:
            ax.set_xlabel("recall R (%)")
    axes[i, -1].legend(fontsize=7, loc="best")
fig.suptitle("Fig S5 · RE@R relative to naive multitask (positive = fewer rank errors); * p < .05 naive vs per level")
fig.tight_layout()
save_figure(fig, "figS5_relative_re_at_r", figures_dir, data)

# %% [markdown]
# ## Runtime: one multitask network against four per-level networks
# Times stored with each experiment: the search (the seconds its networks trained, summed: its cost, however
# many workers shared it), the training of the best configuration, its mean epoch (with the members' scoring)
# and the test-set inference; the per-level row is the sum of the four networks, fold by fold. Ratio: to the
# naive multitask model. Training time depends on the number of epochs early stopping keeps; the epoch time
# does not.

# %%
parts = {name: E.run(name, P, ds, cache_dir=CACHE) for name in LEVEL_PARTS.values()}
timed = {"naive_ndcg": results["naive_ndcg"], **parts}
timings = S.timings_table(timed)
timings = pd.concat([timings, S.sum_of_models(timings, list(parts), "per_level_ndcg")], ignore_index=True)
runtime = S.runtime_table(timings, "naive_ndcg")
save_table(runtime, "runtime_multitask_vs_per_level", tables_dir)
fig, ax = plt.subplots(figsize=(7, 3.5))
TIMINGS = {"train_s": "training (best configuration)", "epoch_s": "one training epoch", "inference_s": "inference (test set)"}
rt = runtime[runtime.model.isin(["naive_ndcg", "per_level_ndcg"]) & runtime.timing.isin(list(TIMINGS))]
for k, (m, lab) in enumerate({"naive_ndcg": "naive multitask (1 network)",
                              "per_level_ndcg": "per level (4 networks)"}.items()):
    d = rt[rt.model == m].set_index("timing").reindex(list(TIMINGS))
    ax.barh(np.arange(len(TIMINGS)) + (k - 0.5) * 0.4, d.mean_s, 0.4, xerr=d.sem_s.fillna(0), label=lab, color=f"C{k}")
ax.set_yticks(range(len(TIMINGS)), list(TIMINGS.values()))
ax.set_xscale("log")
ax.set_xlabel("seconds (mean ± SEM over folds, log scale)")
ax.legend(fontsize=8)
ax.set_title("Runtime: multitask vs per-level models")
fig.tight_layout()
save_figure(fig, "runtime_multitask_vs_per_level", figures_dir, data)
runtime

# %% [markdown]
# ## Claims of §3.3, checked on this run

# %%
claims = []
nd = fig3.set_index(["model", "level"])
rw = ndcg_tests[ndcg_tests.model_a == "reweighted_ndcg"].set_index("level")
rw_rel = {lv: nd.loc[("reweighted_ndcg", lv), "rel"] for lv in LEVELS}
claims.append(check(
    "3.3", "reweighted_degrades_ndcg",
    "The re-weighted multitask model significantly degrades NDCG at every level of the hierarchy.",
    V.significantly_worse_everywhere(rw_rel, rw["p"], LEVELS),
    "; ".join(f"{lv} {rw_rel[lv]:+.2f}% (p={rw.loc[lv, 'p']:.3g})" for lv in LEVELS)))

pl = ndcg_tests[ndcg_tests.model_a == "per_level_ndcg"].set_index("level")
pl_rel = {lv: nd.loc[("per_level_ndcg", lv), "rel"] for lv in LEVELS}
pl_sem = {lv: nd.loc[("per_level_ndcg", lv), "rel_sem"] for lv in LEVELS}
claims.append(check(
    "3.3", "naive_ge_per_level_ndcg",
    "Mean NDCG per level is generally higher for naive multitask than per level, the differences within error bounds.",
    V.not_worse_within_error(pl_rel, pl_sem, pl["p"], LEVELS),
    "per level vs naive: " + "; ".join(f"{lv} {pl_rel[lv]:+.2f}% (p={pl.loc[lv, 'p']:.3g})" for lv in LEVELS)))

better = ttests.mean_diff < 0  # fewer rank errors for naive multitask
sig_cells = [f"{lv} RE@{int(r)} ({'naive' if d < 0 else 'per level'} better, p={p:.3g})"
             for lv, r, p, d in zip(sig.level, sig.R, sig.p, sig.mean_diff)]
claims.append(check(
    "3.3", "naive_better_re_significant_only_billing_high_recall",
    "RE@R is better for naive multitask than per level at most R and levels, significantly (paired t-test) only "
    "at the billing level for recalls of 75% and above.",
    V.better_significant_only_at(ttests, sig, "billing", 75),
    f"naive better in {int(better.sum())}/{len(ttests)} (R, level) cells; p < .05 in: "
    + (", ".join(sig_cells) if sig_cells else "none")))

rt_m = runtime.set_index(["model", "timing"])
ratios = {k: rt_m.loc[("per_level_ndcg", k), "ratio_to_reference"] for k in TIMINGS}
claims.append(check(
    "3.3", "multitask_runtime_advantage",
    "One naive multitask network costs less time than the four per-level networks (runtime advantage).",
    V.all_above_one(ratios, ["epoch_s", "inference_s"]),
    "per-level / multitask time: " + ", ".join(f"{TIMINGS[k]} ×{v:.2f}" for k, v in ratios.items())))
save_claims(claims, "03_multitask", tables_dir)
