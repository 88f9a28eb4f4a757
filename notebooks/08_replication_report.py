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
# # 08 · Replication report
#
# > **Run time** (default profile, 2 CPU cores; `benchmarks/run_times.csv`): this notebook trains nothing and takes 3 s; warm: 3 s.
#
# Writes `REPORT.md` next to the tables: the page reviewers read first. For every published number of the
# paper (`cacicd/reference/paper_values.csv`, one row per item, level, model and metric) it shows the number
# this run regenerated, when a notebook regenerated it, and flags the pairs that differ by more than the
# combined standard errors (or, without SEMs, by more than a documented relative tolerance). It counts the
# claims the notebooks checked, records the run's provenance, and lists the five places where the paper's text
# and its authors' stored outputs disagree. Nothing is recomputed here: it reads the tables of notebooks 00–07.
# A missing table is listed as "not regenerated in this run".

# %% tags=["parameters"]
profile = "default"
data = "synthetic"
figures_dir = "../figures/default"
tables_dir = "../tables/default"
cache_dir = None

# %%
import logging
from pathlib import Path

from IPython.display import Markdown, display

from cacicd.data import sources as cdata
from cacicd.paper import report, runtime
from cacicd.paper.claims import load_claims
from cacicd.paper.figures import is_synthetic, save_table, setup
from cacicd.files import atomic_write_text
from cacicd.models.train import default_device

P, CACHE = setup(profile, data, cache_dir, note='The comparison with published values is for form only.', level=logging.WARNING)

# %% [markdown]
# ## Published and regenerated values

# %%
paper = report.load_paper_values()
ours, tables_read = report.read_regenerated(tables_dir)
comparison = report.compare(paper, ours)
unmatched = report.unmatched_regenerated(paper, ours)
print(f"{len(paper)} published values; {len(ours)} regenerated paper-comparable values from {len(tables_read)} "
      f"table(s); {len(unmatched)} regenerated values match no published one")
comparison["status"].value_counts()

# %% [markdown]
# ## Provenance

# %%
try:
    ds = cdata.load_data(data, P, CACHE)
    data_line = f"{data} ({ds.source or 'source unnamed'}; {ds.n_stays:,} stays, {len(ds.codes):,} codes; " \
                f"content hash {ds.content_hash()})"
    age_line = ds.report.get("age_encoding", "unknown")
except Exception as exc:  # the report must still be written
    data_line = f"{data} (dataset could not be loaded here: {exc})"
    age_line = "unknown (dataset not loaded)"
device = default_device()
provenance = {"data": data_line, "age encoding": age_line, "profile": f"{P.name}: {P.description}",
              "seed": str(P.seed), "folds": str(P.n_folds), "device (this notebook's machine)": runtime.device_name(device),
              **report.output_paths(tables_dir, figures_dir)}
versions = report.package_versions()
run_log = report.read_run_log(tables_dir)
claims = load_claims(tables_dir)
notes = report.PAPER_NOTES.read_text() if report.PAPER_NOTES.exists() else ""
figures = sorted(p.stem for p in Path(figures_dir).glob("*.png")) if Path(figures_dir).exists() else []
provenance

# %% [markdown]
# ## The report

# %%
md = report.render(comparison, synthetic=is_synthetic(data), provenance=provenance, versions=versions,
                   run_log=run_log, claims=claims, disagreements=report.parse_disagreements(notes),
                   tables_read=tables_read, unmatched=unmatched, figures=figures)
path = Path(tables_dir) / "REPORT.md"
path.parent.mkdir(parents=True, exist_ok=True)
atomic_write_text(path, md)
save_table(comparison, "report_comparison", tables_dir)  # every published value with its match, for diffing
print(f"wrote {path.resolve()}")
display(Markdown(md))
