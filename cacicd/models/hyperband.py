"""keras-tuner 1.1's Hyperband schedule (spec section 6), as pure functions of (max_epochs, factor, iterations).

An iteration runs brackets b = s_max … 0, where s_max + 1 is the number of times max_epochs can be divided
by `factor` while it stays >= 1. Bracket b has b + 1 rounds; round r trains `round_size(b, r)` configurations
up to `round_epochs(b, r)` epochs (round 0 from scratch, later rounds continuing the best 1/factor of the
previous round from its saved weights, i.e. from epoch `round_epochs(b, r - 1)`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cacicd.config import Profile


@dataclass(frozen=True)
class Round:
    """One round of one bracket: `size` configurations trained from `initial_epoch` to `epochs`."""

    iteration: int
    bracket: int
    round: int
    size: int
    epochs: int
    initial_epoch: int


def n_brackets(max_epochs: int, factor: int = 3) -> int:
    """How many times max_epochs can be divided by factor while it stays >= 1 (keras-tuner's s_max + 1)."""
    if max_epochs < 1 or factor < 2:
        raise ValueError(f"Hyperband needs max_epochs >= 1 and factor >= 2, got {max_epochs} and {factor}")
    epochs, n = float(max_epochs), 0
    while epochs >= 1:
        epochs /= factor
        n += 1
    return n


def round_size(max_epochs: int, factor: int, bracket: int, rnd: int) -> int:
    """Configurations trained in round `rnd` of bracket `bracket`."""
    end0 = math.ceil(1 + math.log(max_epochs, factor))
    return math.ceil(end0 / (bracket + 1) * factor ** (bracket - rnd))


def round_epochs(max_epochs: int, factor: int, bracket: int, rnd: int) -> int:
    """Epoch reached at the end of round `rnd` of bracket `bracket`."""
    return math.ceil(max_epochs / factor ** (bracket - rnd))


def schedule(max_epochs: int, factor: int = 3, iterations: int = 1) -> list[Round]:
    """Every round of the search, in the order keras-tuner runs them (iteration, bracket s_max…0, round)."""
    out = []
    for it in range(iterations):
        for b in range(n_brackets(max_epochs, factor) - 1, -1, -1):
            for r in range(b + 1):
                out.append(Round(it, b, r, round_size(max_epochs, factor, b, r), round_epochs(max_epochs, factor, b, r),
                                 round_epochs(max_epochs, factor, b, r - 1) if r else 0))
    return out


def n_configurations(max_epochs: int, factor: int = 3, iterations: int = 1) -> int:
    """Configurations started (sizes of the rounds 0): 344 for (150, 3, 2)."""
    return sum(r.size for r in schedule(max_epochs, factor, iterations) if r.round == 0)


def max_epochs_trained(max_epochs: int, factor: int = 3, iterations: int = 1) -> int:
    """Epochs one execution of the whole search trains when no model stops early."""
    return sum(r.size * (r.epochs - r.initial_epoch) for r in schedule(max_epochs, factor, iterations))


def budget_text(profile: Profile) -> str:
    """What a profile's searches run, in words (the README states it for each profile; a test checks it)."""
    n = n_configurations(profile.max_epochs, profile.hyperband_factor, profile.hyperband_iterations)
    execs = profile.executions_per_trial
    return (f"Hyperband over {profile.max_epochs} epochs, factor {profile.hyperband_factor}, "
            f"{profile.hyperband_iterations} iteration(s): {n} configurations for every search, "
            f"{execs} execution(s) each, promoted trials "
            f"{'from fresh weights' if profile.promotion == 'restart' else 'continued from their checkpoint'}, "
            f"{profile.threads} torch thread(s) per training")
