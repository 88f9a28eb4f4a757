"""Time cacicd.evaluation.metrics against scikit-learn on one test matrix of the paper's size.

    python benchmarks/bench_metrics.py            # 5,000 x 9,336, ~40 positives per row (minutes: sklearn is slow)
    python benchmarks/bench_metrics.py --small    # 1,000 x 2,000, seconds

Prints: metric, sklearn seconds, cacicd seconds, ratio, max abs difference.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import scipy.sparse as sp
import sklearn.metrics as skm
from sklearn.feature_selection import mutual_info_classif

from cacicd.evaluation import metrics as M


def make_data(n: int, L: int, per_row: float, seed: int = 0):
    """Zipf-like code frequencies, ~per_row positives a row, float32 scores that carry some signal."""
    rng = np.random.default_rng(seed)
    freq = 1.0 / np.arange(1, L + 1) ** 0.9
    freq *= per_row / freq.sum()
    freq = np.minimum(freq, 0.9)
    y = rng.random((n, L), dtype=np.float32) < freq.astype(np.float32)
    logit = np.log(freq / (1 - freq))[None, :] + 2.0 * y + rng.normal(0, 1.0, (n, L)).astype(np.float32)
    s = (1 / (1 + np.exp(-logit))).astype(np.float32)
    return sp.csr_matrix(y), s


def timed(f):
    t = time.perf_counter()
    v = f()
    return time.perf_counter() - t, v


def sk_auprc_macro(y, s):
    yc = y.tocsc()
    vals = []
    for j in range(s.shape[1]):
        col = yc[:, j].toarray().ravel()
        if col.any():
            p, r, _ = skm.precision_recall_curve(col, s[:, j])
            vals.append(skm.auc(r, p))
    return float(np.mean(vals))


def sk_auroc_macro(y, s):
    yc = y.tocsc()
    vals = []
    for j in range(s.shape[1]):
        col = yc[:, j].toarray().ravel()
        if 0 < col.sum() < len(col):
            vals.append(skm.roc_auc_score(col, s[:, j]))
    return float(np.mean(vals))


def sk_auprc_micro(y, s):
    p, r, _ = skm.precision_recall_curve(y.toarray().ravel(), s.ravel())
    return skm.auc(r, p)


def sk_mi(y, s, cols):
    yc = y.tocsc()
    out = np.full(s.shape[1], np.nan)
    for j in cols:
        col = yc[:, j].toarray().ravel()
        if 0 < col.sum() < len(col):
            out[j] = mutual_info_classif(s[:, [j]], col, n_neighbors=3, random_state=0)[0]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="1,000 x 2,000 instead of 5,000 x 9,336")
    ap.add_argument("--mi-codes", type=int, default=None, help="codes to compare with mutual_info_classif (default all)")
    a = ap.parse_args()
    n, L = (1000, 2000) if a.small else (5000, 9336)
    y, s = make_data(n, L, 40.0)
    yd = y.toarray()
    print(f"y_true {n} x {L}, {y.nnz / n:.1f} positives per row, {int((np.diff(y.tocsc().indptr) > 0).sum())} "
          f"labels with a positive; y_score float32\n")
    pred = (s > 0.5)
    keep_lab = np.flatnonzero(yd.sum(0) > 0)
    keep_row = yd.sum(1) > 0
    cases = [
        ("ndcg", lambda: skm.ndcg_score(yd, s), lambda: M.ndcg(y, s, ties="average")),
        ("coverage", lambda: skm.coverage_error(yd, s), lambda: M.coverage(y, s)),
        ("re@100 (vs coverage - n)", lambda: np.mean([skm.coverage_error(yd, s) - yd.sum(1).mean()]) * n / keep_row.sum(),
         lambda: M.re_at_r(y, s, 100)),
        ("lrap", lambda: skm.label_ranking_average_precision_score(yd, s), lambda: M.lrap(y, s)),
        ("auprc_macro", lambda: sk_auprc_macro(y, s), lambda: M.auprc(y, s, "macro")),
        ("auroc_macro", lambda: sk_auroc_macro(y, s), lambda: M.auroc(y, s, "macro")),
        ("auprc_micro", lambda: sk_auprc_micro(y, s), lambda: M.auprc(y, s, "micro")),
        ("auroc_micro", lambda: skm.roc_auc_score(yd.ravel(), s.ravel()), lambda: M.auroc(y, s, "micro")),
        ("f1_macro", lambda: skm.f1_score(yd, pred, average="macro", labels=keep_lab, zero_division=0),
         lambda: M.f1(y, s, average="macro")),
        ("f1_samples", lambda: skm.f1_score(yd[keep_row], pred[keep_row], average="samples", zero_division=0),
         lambda: M.f1(y, s, average="samples")),
        ("brier", lambda: skm.brier_score_loss(yd.ravel(), s.ravel()), lambda: M.calibration(y, s).brier),
    ]
    print(f"{'metric':28s} {'sklearn s':>10s} {'cacicd s':>10s} {'ratio':>8s} {'max |diff|':>11s}")
    for name, f_sk, f_us in cases:
        t_sk, v_sk = timed(f_sk)
        t_us, v_us = timed(f_us)
        print(f"{name:28s} {t_sk:10.2f} {t_us:10.2f} {t_sk / t_us:8.1f} {abs(v_sk - v_us):11.2e}", flush=True)
    cols = np.arange(L) if a.mi_codes is None else np.linspace(0, L - 1, a.mi_codes).astype(int)
    t_sk, mi_sk = timed(lambda: sk_mi(y, s, cols))
    t_us, mi_us = timed(lambda: M.mutual_info_per_label(y, s))
    if len(cols) < L:
        t_sk *= L / len(cols)  # extrapolated to every code
    d = np.abs(mi_sk - mi_us)[cols]
    npos = np.diff(y.tocsc().indptr)[cols]
    print(f"{'mutual information (all)':28s} {t_sk:10.2f} {t_us:10.2f} {t_sk / t_us:8.1f} {np.nanmax(d):11.2e}")
    big = npos > 7
    print(f"  max |diff| codes with > 7 positives: {np.nanmax(d[big]):.2e} ({int(big.sum())} codes); "
          f"<= 7 positives: {np.nanmax(d[~big]) if (~big & ~np.isnan(d)).any() else float('nan'):.2e} "
          f"({int((~big).sum())} codes); codes off by > 0.01 nats: {int(np.nansum(d > 0.01))}")
    levels = np.array(["chapter", "subchapter", "3digit", "4digit", "5digit"])[np.arange(L) % 5]
    groups = {lv: levels == lv for lv in dict.fromkeys(levels)}
    groups["billing"] = np.arange(L) % 3 == 0
    groups["all"] = np.ones(L, bool)
    t1, _ = timed(lambda: M.evaluate(y, s, {"all": groups["all"]}))
    t7, df = timed(lambda: M.evaluate(y, s, groups))
    print(f"\nevaluate(): all {len(M.DEFAULT_METRICS)} default metrics, group 'all': {t1:.1f} s; "
          f"7 groups ({len(df)} rows): {t7:.1f} s")
    t_mr, _ = timed(lambda: M.median_ranks(y, s))
    t_er, _ = timed(lambda: M.entropy_reduction(y, s, np.clip(yd.mean(0), 1e-4, 0.5)))
    print(f"median_ranks: {t_mr:.1f} s; entropy_reduction: {t_er:.1f} s")


if __name__ == "__main__":
    main()
