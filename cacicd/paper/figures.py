"""Writing figures (PNG + PDF) and tables (CSV + Markdown) for the notebooks, with provenance marks."""
from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from cacicd.files import atomic_write_bytes, atomic_write_text, jsonable

log = logging.getLogger(__name__)
SYNTHETIC_NOTE = "synthetic data (cacicd generator): not MIMIC-III"


def is_synthetic(data: str) -> bool:
    """True when the data source is the embedded synthetic generator."""
    return str(data).split("?", 1)[0] == "synthetic"


def setup(profile: str, data: str, cache_dir=None, note: str = "", level: int = logging.WARNING):
    """A notebook's common start: logging, the Profile, the cache folder, and the synthetic-data notice."""
    from cacicd.config import cache_root, get_profile

    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if is_synthetic(data):
        print(f"Data: {SYNTHETIC_NOTE}. {note}".rstrip())
    return get_profile(profile), Path(cache_dir) if cache_dir else cache_root()


def save_figure(fig, name: str, figures_dir: str | Path, data: str = "synthetic") -> list[Path]:
    """Save a matplotlib figure as NAME.png and NAME.pdf; synthetic-data figures say so."""
    figures_dir = Path(figures_dir)
    figures_dir.mkdir(parents=True, exist_ok=True)
    if is_synthetic(data):
        # just below the figure's own area (the tight bounding box takes it in), so it never covers an axis label
        fig.text(0.995, 0.0, SYNTHETIC_NOTE, ha="right", va="top", fontsize=7, color="0.45", style="italic")
    paths = []
    for ext, kw in (("png", {"dpi": 130}), ("pdf", {})):
        path = figures_dir / f"{name}.{ext}"
        buf = io.BytesIO()
        fig.savefig(buf, format=ext, bbox_inches="tight", metadata=None if ext == "png" else {"CreationDate": None}, **kw)
        atomic_write_bytes(path, buf.getvalue())
        paths.append(path)
    return paths


def to_markdown(df: pd.DataFrame, floatfmt: str = ".4g") -> str:
    """A GitHub-flavoured Markdown table of a DataFrame (index dropped)."""
    def fmt(v):
        if isinstance(v, (float, np.floating)):
            return "" if np.isnan(v) else format(float(v), floatfmt)
        return str(v)

    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def save_table(df: pd.DataFrame, name: str, tables_dir: str | Path, floatfmt: str = ".4g") -> Path:
    """Write a table as NAME.csv and NAME.md (aggregates only)."""
    tables_dir = Path(tables_dir)
    tables_dir.mkdir(parents=True, exist_ok=True)
    path = tables_dir / f"{name}.csv"
    atomic_write_text(path, df.to_csv(index=False))
    atomic_write_text(tables_dir / f"{name}.md", to_markdown(df, floatfmt))
    return path


def save_json(obj: dict, name: str, tables_dir: str | Path) -> Path:
    """Write a small JSON document (test statistics, claims) next to the tables."""
    path = Path(tables_dir) / f"{name}.json"
    atomic_write_text(path, json.dumps(obj, indent=1, default=jsonable))
    return path


def finish_figure(fig, figures_dir: str | Path, data: str, name: str) -> list[Path]:
    """Lay a figure out leaving room under the axes for `save_figure`'s provenance note, then save it."""
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return save_figure(fig, name, figures_dir, data)
