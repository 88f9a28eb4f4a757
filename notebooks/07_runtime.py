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
# # 07 · Runtime (paper §3.6.2)
#
# > **Run time** (default profile, 2 CPU cores; `benchmarks/run_times.csv`): `./run_all.sh` first trains every experiment (19 min on a cold cache, 2 Dask workers), then this notebook takes 21 s; warm: 16 s. Opened alone on a cold cache, it trains what it needs in its kernel, one network after another.
#
# The paper's claim: the best NDCG model processes the whole MIMIC-III dataset, 58,976 hospital stays, in
# **1.92 ± 0.19 s** with an inference batch size of 1,024 on a T4 NVIDIA GPU.
#
# Here: the NDCG-tuned naive multitask model (fold 0 of the engine's cache) predicts every stay of the dataset,
# for each batch size of the profile (paper: 16 … 4,096): one warm-up pass, then `inference_repeats` timed
# passes; mean ± SD. A pass includes moving the sparse batches to the device and the probabilities back to host
# memory. The device is named in every table; GPU and CPU timings are written to separate tables
# (`runtime_inference_<cpu|cuda>`), never mixed. A training epoch of the same architecture is timed as well.

# %% tags=["parameters"]
profile = "default"
data = "synthetic"
figures_dir = "../figures/default"
tables_dir = "../tables/default"
cache_dir = None

# %%
import logging

import matplotlib.pyplot as plt
import pandas as pd
import torch

from cacicd.data import sources as cdata
from cacicd.data import splits
from cacicd.experiments import engine as E
from cacicd.models.train import default_device, set_threads
from cacicd.paper import report, runtime
from cacicd.paper import verdicts as V
from cacicd.paper.claims import check, configure, save_claims
from cacicd.paper.figures import save_figure, save_json, save_table, setup

P, CACHE = setup(profile, data, cache_dir, note='Its size and code count set the work, not its values.', level=logging.WARNING)

# %%
ds = cdata.load_data(data, P, CACHE)
configure(P.name, cdata.min_test_stays(ds, P, CACHE))  # withholds verdicts on smoke / tiny test folds
ndcg_runs = E.run("naive_ndcg", P, ds, cache_dir=CACHE, progress=False)
best = ndcg_runs[0]
device = default_device()
set_threads()
model = best.load_model(str(device))
kind, name = runtime.device_kind(device), runtime.device_name(device)
n_params = sum(p.numel() for p in model.parameters())
print(f"device: {name} [{kind}]; model {model.config}, {n_params:,} parameters; "
      f"{ds.n_stays:,} stays × {ds.X.shape[1]:,} inputs -> {len(ds.codes):,} codes")

# %% [markdown]
# ## Inference over the whole dataset, per batch size

# %%
raw = runtime.time_inference(model, ds.X, P.inference_batch_sizes, repeats=P.inference_repeats, warmup=1,
                             device=device, progress=True, precision=P.precision)
inf = runtime.summarize(raw)
save_table(raw, runtime.table_name("runtime_inference_repeats", raw), tables_dir)
save_table(inf, runtime.table_name("runtime_inference", raw), tables_dir, floatfmt=".4g")
inf

# %%
fig, ax = plt.subplots(figsize=(5.8, 3.8))
ax.errorbar(inf["batch_size"], inf["mean_s"], yerr=inf["std_s"].fillna(0), marker="o", capsize=3)
ax.set_xscale("log", base=2)
ax.set_xticks(inf["batch_size"], [f"{b:,}" for b in inf["batch_size"]])
ax.set_ylim(bottom=0)
ax.set_xlabel("inference batch size")
ax.set_ylabel(f"seconds for all {ds.n_stays:,} stays")
ax.set_title(f"Inference time, NDCG-tuned model (mean ± SD of {P.inference_repeats})\n{name}, {inf['precision'].iloc[0]}",
             fontsize=9)
ax.grid(alpha=0.3)
save_figure(fig, f"runtime_inference_{kind}", figures_dir, data)
plt.show()

# %% [markdown]
# ## Training time per epoch (same architecture, the fold's training set, BCE + Adam, the profile's batch size)

# %%
train_idx, _, _ = splits.split_indices(ds, cdata.get_splits(ds, P, CACHE)[0])
tr = runtime.time_training_epochs(model, ds.X[train_idx], ds.Y[train_idx], epochs=2, batch_size=P.batch_size,
                                  lr=P.learning_rate, device=device, precision=P.precision)
tr_sum = runtime.summarize_training(tr)
save_table(tr_sum, runtime.table_name("runtime_training_epoch", tr), tables_dir)
engine_epoch = pd.DataFrame([{"experiment": "naive_ndcg", "fold": r.fold, "epoch_s": r.timings.get("epoch_s"),
                              "train_s": r.timings.get("train_s"), "search_s": r.timings.get("search_s")}
                             for r in ndcg_runs])
save_table(engine_epoch, "runtime_engine_recorded", tables_dir)
print("Engine-recorded times (the device that trained the cache, epochs including dev scoring):")
pd.concat([tr_sum, engine_epoch])

# %% [markdown]
# ## The paper's figure, and the claim

# %%
PAPER_STAYS = int(report.paper_value("dataset", "stays (visit_occurrence rows; paper calls them ICU stays)"))
PAPER_MODEL, PAPER_METRIC = "T4 GPU batch 1024 (NDCG-tuned naive multitask)", f"runtime_s (all {PAPER_STAYS:,} stays)"
PAPER_S, PAPER_SPREAD = map(float, report.published_row("Section 3.6.2", PAPER_METRIC, "all",
                                                        PAPER_MODEL)[["value", "sem"]])
CLAIM = (f"The best NDCG model processes the {PAPER_STAYS:,} MIMIC-III stays in {PAPER_S:g} ± {PAPER_SPREAD:g} s at "
         "batch size 1,024")
row = inf[inf["batch_size"] == 1024]
paper_rows = []
if len(row):
    r = row.iloc[0]
    per_paper_size = r["mean_s"] * PAPER_STAYS / ds.n_stays
    is_t4 = kind == "cuda" and "T4" in name
    claims = [check("3.6.2", "inference_whole_dataset", CLAIM + " on a T4 GPU",
                    V.within_spread(per_paper_size, PAPER_S, PAPER_SPREAD, r["std_s"], comparable=is_t4),
                    f"{r['mean_s']:.3f} ± {r['std_s']:.3f} s for {ds.n_stays:,} stays on {name} "
                    f"({r['samples_per_s']:,.0f} stays/s; {per_paper_size:.2f} s scaled to {PAPER_STAYS:,} stays)"
                    + ("" if is_t4 else "; not a T4 GPU, so not comparable"))]
    paper_rows.append(report.paper_row("Section 3.6.2", "all", f"{name} batch 1024 (NDCG-tuned naive multitask)",
                                       f"runtime_s (all {ds.n_stays:,} stays)", r["mean_s"], r["std_s"], "s",
                                       paper_model=PAPER_MODEL, paper_metric=PAPER_METRIC))
else:
    claims = [check("3.6.2", "inference_whole_dataset", CLAIM, None,
                    f"batch size 1,024 not in profile {P.name}'s sizes {P.inference_batch_sizes}")]
save_table(report.paper_table(paper_rows, columns=[*report.LONG_COLUMNS, "paper_model", "paper_metric"]),
           f"paper_07_runtime_{kind}", tables_dir)
save_json({"device": name, "device_kind": kind, "torch": torch.__version__, "n_parameters": n_params,
           "model": model.config, "n_stays": ds.n_stays}, f"runtime_device_{kind}", tables_dir)
save_claims(claims, "07_runtime", tables_dir)
