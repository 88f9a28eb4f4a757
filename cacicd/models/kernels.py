"""Fused element-wise kernels of a training step: BCE with logits (loss and gradient in one pass) and Adam.

On the CPU each kernel is compiled once per process by TorchInductor (`torch.compile`, a C++ loop
over the elements, vectorised) so a (B, L) block or a weight matrix is read once instead of once per
eager operator. A kernel with sums runs on one thread, so its bits never depend on a thread count; an
element-wise one (`adam`) on torch's threads, compiled once per thread count (its bits are the same).
Each has an eager twin giving the same values by eager operators (torch's fused Adam for `adam`): on
other devices and dtypes, with CACICD_EAGER_KERNELS=1, or where compiling fails (no C++ compiler; a
warning says so: the last bits of a training then differ from a compiled run's).
"""
from __future__ import annotations

import os
import threading
import types
import warnings
from collections.abc import Callable

import torch

SOFTPLUS_LINEAR = 40.0  # softplus(u) = u above this: exact in float64 too (e^-40 < 2^-53 * 40)

_lock = threading.Lock()
_compiled: dict[tuple[Callable, int], Callable] = {}  # (kernel, threads) -> its compiled function
_variants: dict[tuple[Callable, int], Callable] = {}  # (kernel, threads > 1) -> a copy with a code object of its own
_failed: set[Callable] = set()


def compile_on_cpu() -> bool:
    """Whether kernels are compiled on the CPU (set CACICD_EAGER_KERNELS=1 to run them eagerly)."""
    return os.environ.get("CACICD_EAGER_KERNELS", "") in ("", "0")


def variant(fn: Callable, threads: int) -> Callable:
    """The function compiled for `threads` threads: fn itself for one, else a copy of fn with its own code object
    (dynamo keeps a code object's graphs together, whatever options compiled them)."""
    if threads == 1:
        return fn
    if (fn, threads) not in _variants:
        code = fn.__code__.replace(co_name=f"{fn.__name__}_{threads}_threads")
        _variants[(fn, threads)] = types.FunctionType(code, fn.__globals__, code.co_name, fn.__defaults__,
                                                      fn.__closure__)
    return _variants[(fn, threads)]


def _compiled_fn(fn: Callable) -> Callable:
    """fn compiled by inductor (once per process and thread count), or fn itself where compiling is off or failed."""
    if fn in _failed or not compile_on_cpu():
        return fn
    threads = torch.get_num_threads() if fn in ELEMENT_WISE else 1
    with _lock:
        if (fn, threads) not in _compiled:
            import torch._dynamo.config as dynamo_config  # noqa: PLC2701 - torch has no public setting for this

            # one graph per variant (weights or none, a batch of one, ...): room for all, never an eager fallback
            dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, 64)
            dynamo_config.accumulated_recompile_limit = max(dynamo_config.accumulated_recompile_limit, 1024)
            # a kernel with sums on one thread: their order, hence its bits, never depend on a thread count, and
            # it is the same kernel on disk for a process of any thread count; no pool of compiler processes
            _compiled[(fn, threads)] = torch.compile(variant(fn, threads), dynamic=True, fullgraph=True,
                                                     options={"cpp.threads": threads, "compile_threads": 1})
        return _compiled[(fn, threads)]


def run(fn: Callable, eager: Callable, *args: torch.Tensor | None):
    """fn(*args) compiled where its first argument is a float32 CPU tensor; eager(*args), the same values by eager
    operators, elsewhere (other devices and dtypes) or when compiling is off or failed."""
    if args[0].device.type != "cpu" or args[0].dtype not in (torch.float32, torch.bfloat16):
        return eager(*args)
    compiled = _compiled_fn(fn)
    if compiled is fn:
        return eager(*args)
    try:
        return compiled(*args)
    except Exception as e:  # noqa: BLE001 - e.g. no C++ compiler: the eager operators give the same values
        _failed.add(fn)
        warnings.warn(f"cacicd: could not compile the {fn.__name__} kernel ({type(e).__name__}: {str(e)[:200]}); "
                      "eager operators compute it (slower, and a training's last bits differ from a compiled run's)",
                      RuntimeWarning, stacklevel=2)
        return eager(*args)


def positive_term(weight: torch.Tensor | None, pos_weight: torch.Tensor | None) -> torch.Tensor | None:
    """pw1 = w·(pw − 1) (w = 1 where None): the positive pairs' extra weight, f = w + pw1·y; None without pos_weight."""
    if pos_weight is None:
        return None
    return (weight if weight is not None else torch.ones_like(pos_weight)) * (pos_weight - 1)


def unit(grad: torch.Tensor) -> bool:
    """Whether a loss's incoming gradient is exactly 1 (the loss is not scaled or summed with others); False off the
    CPU, where reading it would wait for the device."""
    return grad.device.type == "cpu" and float(grad) == 1.0


def _bce(z: torch.Tensor, y: torch.Tensor, w: torch.Tensor | None, pw1: torch.Tensor | None,
         scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    e = torch.exp(-z.abs())
    u = z - 2 * y * z  # ±z exactly
    terms = torch.clamp_min(u, 0) + torch.log1p(e)
    r = 1 / (1 + e)
    g = torch.where(z >= 0, r, e * r) - y
    if w is not None or pw1 is not None:
        f = (w if w is not None else 1) + (pw1 * y if pw1 is not None else 0)
        terms, g = terms * f, g * f
    return terms.sum(), g * scale


def bce_terms(z: torch.Tensor, y: torch.Tensor, w: torch.Tensor | None, pw1: torch.Tensor | None,
              scale: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Σ f·softplus((1 − 2y)·z) for 0/1 targets y, f = w + pw1·y (w, pw1: (L,) or None); grad ← (σ(z) − y)·f·scale.

    One exponential serves both: e = exp(−|z|), softplus(±z) = max(±z, 0) + log1p(e), σ(z) = 1/(1 + e)
    for z >= 0 and e/(1 + e) below.
    """
    total, g = _bce(z, y, w, pw1, scale)
    grad.copy_(g)
    return total


def bce_terms_eager(z: torch.Tensor, y: torch.Tensor, w: torch.Tensor | None, pw1: torch.Tensor | None,
                    scale: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """`bce_terms` by eager operators, few passes: softplus((1 − 2y)·z) and σ(z) − y, weighted."""
    u = torch.addcmul(z, z, y, value=-2)  # ±z, exactly
    torch.ops.aten.softplus.out(u, 1.0, SOFTPLUS_LINEAR, out=u)
    g = torch.sigmoid(z, out=grad).sub_(y)
    if w is not None or pw1 is not None:
        f = torch.addcmul(w if w is not None else torch.ones_like(pw1), y, pw1) if pw1 is not None else w
        u.mul_(f)
        g.mul_(f)
    g.mul_(scale)
    return u.sum()


def linear_bce_terms(out: torch.Tensor, bias: torch.Tensor, y: torch.Tensor, w: torch.Tensor | None,
                     pw1: torch.Tensor | None, scale: torch.Tensor,
                     g_lp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`bce_terms` of the logits z = out (a low-precision product) + bias: (loss sum, gradient's column sums); the
    gradient itself goes into g_lp in g_lp's dtype."""
    total, g = _bce(out.float() + bias, y, w, pw1, scale)
    g_lp.copy_(g)
    return total, g.sum(0)


def linear_bce_terms_eager(out: torch.Tensor, bias: torch.Tensor, y: torch.Tensor, w: torch.Tensor | None,
                           pw1: torch.Tensor | None, scale: torch.Tensor,
                           g_lp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`linear_bce_terms` by eager operators."""
    z = torch.add(out, bias)
    g = torch.empty_like(z)
    total = bce_terms_eager(z, y, w, pw1, scale, g)
    g_lp.copy_(g)
    return total, g.sum(0)


def adam(p: torch.Tensor, g: torch.Tensor, m: torch.Tensor, v: torch.Tensor, lp: torch.Tensor | None,
         step: torch.Tensor, lr: torch.Tensor, beta1: torch.Tensor, beta2: torch.Tensor, eps: torch.Tensor,
         step_size: torch.Tensor, root_bc2: torch.Tensor) -> None:
    """Adam step `step` (t) in place, as Keras 2.9 takes it: p −= lr / (1 − β1^t)·m / ((√v + eps) / √(1 − β2^t)).

    step_size = lr / (1 − β1^t) and root_bc2 = √(1 − β2^t) come computed (not per element); g may be of a lower
    precision than p (it is widened); lp (optional) receives the new p in its own dtype.
    """
    g = g.to(p.dtype)
    m2 = m * beta1 + g * (1 - beta1)
    v2 = v * beta2 + g * g * (1 - beta2)
    p2 = p - step_size * m2 / ((v2.sqrt() + eps) / root_bc2)
    m.copy_(m2)
    v.copy_(v2)
    p.copy_(p2)
    if lp is not None:
        lp.copy_(p2)


def adam_eager(p: torch.Tensor, g: torch.Tensor, m: torch.Tensor, v: torch.Tensor, lp: torch.Tensor | None,
               step: torch.Tensor, lr: torch.Tensor, beta1: torch.Tensor, beta2: torch.Tensor, eps: torch.Tensor,
               step_size: torch.Tensor, root_bc2: torch.Tensor) -> None:
    """`adam` by torch's fused Adam kernel, its eps set to eps / √(1 − β2^t) (the same step)."""
    b2 = float(beta2)
    torch._fused_adam_([p], [g.to(p.dtype)], [m], [v], [], [step], lr=float(lr), beta1=float(beta1), beta2=b2,
                       weight_decay=0.0, eps=float(eps) / float(root_bc2), amsgrad=False, maximize=False)
    if lp is not None:
        lp.copy_(p)


ELEMENT_WISE = frozenset({adam})  # kernels without a sum: the same bits on any number of threads
