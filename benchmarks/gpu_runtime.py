"""Spec section 11 on whatever device is present: paper-size network, 58,976 stays, batch 16 … 4,096.

Prints (and writes to $OUT or ./) the inference table and a training epoch time, naming the device.
The network has the paper's best shape (1,166 inputs, two hidden layers of 2,560, 9,336 outputs)
with random weights: inference time does not depend on the weights.
"""
import os
import sys

import numpy as np
import scipy.sparse as sp
import torch

from cacicd.paper import runtime
from cacicd.models.network import MLP


def main() -> None:
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    n, n_in, n_out = 58_976, 1_166, 9_336
    rng = np.random.default_rng(0)
    nnz = 35
    rows = np.repeat(np.arange(n), nnz)
    cols = rng.integers(2, n_in, size=n * nnz)
    X = sp.csr_matrix((np.ones(n * nnz, np.float32), (rows, cols)), shape=(n, n_in))
    X.data[:] = 1.0
    model = MLP(n_in, n_out, [2560, 2560], [0.6, 0.6], False)
    t = runtime.time_inference(model, X, [16, 64, 256, 1024, 4096], repeats=3, warmup=1, device=dev)
    s = runtime.summarize(t)
    print(f"device: {runtime.device_name(dev)}")
    print(s.to_string(index=False))
    Y = sp.random(48_976, n_out, density=40 / n_out, format="csr", random_state=0, dtype=np.float32)
    Y.data[:] = 1.0
    ep = runtime.time_training_epochs(model, X[:48_976], Y, epochs=1, device=dev)
    print("training epoch (48,976 stays, batch 128):")
    print(ep.to_string(index=False) if hasattr(ep, "to_string") else ep)
    out = os.environ.get("OUT", ".")
    s.to_csv(os.path.join(out, runtime.table_name("runtime_inference_paper_network", t) + ".csv"), index=False)


if __name__ == "__main__":
    sys.exit(main())
