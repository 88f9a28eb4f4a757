"""Regenerate re_authors_reference.npz: RE@R per stay from the authors' own library (not run by the tests).

Needs Python 3.10 with tensorflow-cpu 2.9.1, tensorflow-probability 0.17.0 and numpy < 1.24 (the authors'
versions), and keras_extra at commit b54f0a8 (their submodule pin) on sys.path as `keras_utils` (its
__init__ imports optional modules: a package holding only stats.py, utils.py and metrics.py suffices).
Calls `keras_utils.metrics.rank_errors_at_percentile` exactly as the authors' analysis notebook did.

    python make_re_authors_reference.py /path/to/folder/holding/keras_utils
"""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, sys.argv[1])
from keras_utils import metrics as kumet  # noqa: E402

R = (10, 25, 33, 50, 66, 75, 90, 100)
rng = np.random.default_rng(7)
out = {}
for k, (n, L, p) in enumerate([(60, 10, 0.5), (80, 19, 0.3), (60, 50, 0.1), (40, 151, 0.05)]):
    y = (rng.random((n, L)) < p).astype(np.int64)
    y[0] = 0  # no positive
    y[1] = 0
    y[1, 3] = 1  # one positive
    y[2] = 0
    y[2, :8] = 1  # eight positives
    s = rng.random((n, L)).astype(np.float32) ** 3  # many small scores: float16 ties
    s[:, ::7] = np.round(s[:, ::7], 2)  # exact ties too
    out[f"y{k}"], out[f"s{k}"] = y, s
    for f16 in (True, False):
        pred = s.astype(np.float16) if f16 else s.astype(np.float64)
        out[f"re{k}_{int(f16)}"] = np.stack([
            kumet.rank_errors_at_percentile(y_true=y, y_pred=pred, q=q, no_true_label_value=None).numpy()
            for q in R], axis=1)
np.savez_compressed(Path(__file__).with_name("re_authors_reference.npz"), **out)
