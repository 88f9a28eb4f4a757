"""Aggregate description tables of a dataset (the 00_data notebook): codes per level and per stay, Zipf, report."""
from __future__ import annotations

import numpy as np
import pandas as pd

from cacicd import icd9
from cacicd.data.dataset import Dataset


def _per_stay_stats(Y, masks: dict[str, np.ndarray]) -> pd.DataFrame:
    """Distinct codes per stay at each level (min, max, median, mean, sd) among the codes of `masks`."""
    rows = []
    for lvl in icd9.REPORT_LEVELS:
        n = np.asarray(Y[:, np.flatnonzero(masks[lvl])].sum(axis=1)).ravel().astype(float)
        rows.append({"level": lvl, "min": n.min() if len(n) else np.nan, "max": n.max() if len(n) else np.nan,
                     "median": float(np.median(n)) if len(n) else np.nan, "mean": n.mean() if len(n) else np.nan,
                     "sd": n.std(ddof=1) if len(n) > 1 else np.nan})
    return pd.DataFrame(rows)


def _flatten(d: dict, prefix: str = "") -> list[tuple[str, object]]:
    """(dotted key, value) pairs of a nested dict, lists joined by commas."""
    out = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.extend(_flatten(v, key + "."))
        elif isinstance(v, (list, tuple)):
            out.append((key, ", ".join(str(x) for x in v)))
        else:
            out.append((key, v))
    return out


def describe(dataset: Dataset) -> dict[str, pd.DataFrame]:
    """Aggregate description tables of a dataset (never patient-level rows).

    table1: codes per level (ICD-9-CM, dataset, cherry-picked); table2 / tableS2: codes per stay
    per level over every stay (all codes / cherry-picked codes), a stay's count at a level being the
    number of distinct codes of that level after roll-up, sd with ddof=1; zipf: per level the code
    frequencies ranked (level, rank, stays); codes_per_stay: stays by number of codes (all levels);
    report: the loader's drop report as (item, value).
    """
    masks = dataset.level_masks()
    cherry = dataset.cherry_mask()
    full = icd9.table1_icd9_counts()
    table1 = pd.DataFrame([{"level": lvl, "icd9cm": full[lvl], "dataset": int(masks[lvl].sum()),
                            "cherry_picked": int((masks[lvl] & cherry).sum())} for lvl in icd9.REPORT_LEVELS])
    Y = dataset.Y.tocsc()
    table2 = _per_stay_stats(Y, masks)
    tableS2 = _per_stay_stats(Y, {k: m & cherry for k, m in masks.items()})
    counts = dataset.code_counts()
    zipf = []
    for lvl in icd9.REPORT_LEVELS:
        c = np.sort(counts[masks[lvl]])[::-1]
        zipf.append(pd.DataFrame({"level": lvl, "rank": np.arange(1, len(c) + 1), "stays": c}))
    per_stay = np.diff(dataset.Y.tocsr().indptr)
    values, n = np.unique(per_stay, return_counts=True)
    report = pd.DataFrame(_flatten(dataset.report), columns=["item", "value"])
    report["value"] = report["value"].astype(str)
    return {"table1": table1, "table2": table2, "tableS2": tableS2, "zipf": pd.concat(zipf, ignore_index=True),
            "codes_per_stay": pd.DataFrame({"codes": values, "stays": n}), "report": report}
