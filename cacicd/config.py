"""One configuration object per profile: smoke (CI, minutes), default (synthetic, the main job), paper; the
entry points' argument parser."""
from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

PAPER_STAYS = 58_976
PAPER_SPLIT = 5_000  # dev and test sizes in the paper
PRECISIONS = ("auto", "float32", "bfloat16")  # training and inference precision (cacicd.models.train)
PROMOTIONS = ("restart", "continue")  # Hyperband's promoted trials: keras-tuner 1.1.2 (fresh weights) or >= 1.2


@dataclass(frozen=True)
class SearchSpace:
    """Hyperparameter ranges of spec section 6 (a profile may shrink them)."""

    num_layers: tuple[int, int] = (1, 8)
    units: tuple[int, int, int] = (256, 6144, 256)  # low, high, step
    dropout: tuple[float, float] = (0.0, 0.8)
    batchnorm: tuple[bool, ...] = (False, True)


@dataclass(frozen=True)
class Profile:
    """Everything that differs between smoke, default and paper runs."""

    name: str
    n_stays: int  # synthetic stays generated (ignored for real data)
    n_folds: int = 3
    split_fraction: float = PAPER_SPLIT / PAPER_STAYS  # dev and test fractions
    group_by_person: bool = False
    seed: int = 0
    # training (spec section 6)
    learning_rate: float = 2e-4
    batch_size: int = 128
    patience: int = 3
    max_epochs: int = 150
    precision: str = "auto"  # "auto" (bfloat16 where the hardware has it natively), "float32" or "bfloat16"
    threads: int = 1  # torch CPU threads of one training: a training's bits depend on it, so results do too
    # search (keras-tuner Hyperband, spec section 6; cacicd.models.hyperband)
    space: SearchSpace = field(default_factory=SearchSpace)
    hyperband_factor: int = 3
    hyperband_iterations: int = 2  # every search's (one budget for all: the comparisons are fair)
    executions_per_trial: int = 3
    promotion: str = "restart"  # keras-tuner 1.1.2 (the authors' pin): promoted trials from fresh weights;
    # "continue": from the previous round's checkpoint (keras-tuner >= 1.2)
    # runtime benchmark (spec section 11)
    inference_batch_sizes: tuple[int, ...] = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
    inference_repeats: int = 3
    description: str = ""

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"profile {self.name!r}: unknown precision {self.precision!r}; "
                             f"choose one of {', '.join(PRECISIONS)}")
        if self.promotion not in PROMOTIONS:
            raise ValueError(f"profile {self.name!r}: unknown promotion {self.promotion!r}; "
                             f"choose one of {', '.join(PROMOTIONS)}")
        if not (isinstance(self.threads, int) and self.threads >= 1):
            raise ValueError(f"profile {self.name!r}: threads must be an integer >= 1, got {self.threads!r}")

    def replace(self, **changes) -> "Profile":
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)


PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke",
        n_stays=1_000,
        split_fraction=0.15,
        max_epochs=2,  # Hyperband, factor 2: brackets of 2 and 2 configurations, 4 in all
        space=SearchSpace(num_layers=(1, 2), units=(64, 128, 64), dropout=(0.0, 0.5), batchnorm=(False,)),
        hyperband_factor=2,
        hyperband_iterations=1,
        executions_per_trial=1,
        patience=1,
        batch_size=128,
        learning_rate=2e-3,
        inference_batch_sizes=(64, 512),
        inference_repeats=2,
        description="CI check of every code path; numbers are meaningless.",
    ),
    "default": Profile(
        name="default",
        n_stays=7_000,
        split_fraction=0.125,
        max_epochs=3,  # Hyperband, factor 3: brackets of 3 and 2 configurations (5 an iteration), 11 epochs at most
        space=SearchSpace(num_layers=(1, 3), units=(128, 1024, 128), dropout=(0.0, 0.8), batchnorm=(False, True)),
        hyperband_iterations=4,  # 20 configurations for every search
        executions_per_trial=1,
        patience=2,
        learning_rate=5e-3,
        batch_size=128,
        inference_batch_sizes=(16, 64, 256, 1024, 4096),
        description="Embedded synthetic data, shrunken Hyperband; the main job (≤ 45 min on 2 CPU cores).",
    ),
    "paper": Profile(
        name="paper",
        n_stays=PAPER_STAYS,
        description="Real MIMIC-III OMOP sizes and the authors' search: Hyperband over 150 epochs, factor 3, "
                    "2 iterations (344 configurations), 3 executions per trial (GPU advised).",
    ),
}


def get_profile(name: str) -> Profile:
    """The profile of that name (its precision overridden by $CACICD_PRECISION when set), with a clear error."""
    try:
        profile = PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}") from None
    if os.environ.get("CACICD_PRECISION"):
        profile = profile.replace(precision=os.environ["CACICD_PRECISION"])
    return profile


def cpu_count() -> int:
    """CPUs this process may use: its CPU affinity where the OS has one, else every CPU of the machine."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def project_root(start: Path | None = None) -> Path | None:
    """The nearest folder at or above `start` (default: the working directory) holding run_all.sh and cacicd/."""
    here = (start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        if (d / "run_all.sh").is_file() and (d / "cacicd").is_dir():
            return d
    return None


def cache_root() -> Path:
    """Root folder of the on-disk cache: env CACICD_CACHE, else <project root>/cache, else ./cache.

    Anchoring at the project root lets `./run_all.sh` (run from the root) and a notebook opened in
    notebooks/ (whose working directory is notebooks/) share one cache.
    """
    if os.environ.get("CACICD_CACHE"):
        return Path(os.environ["CACICD_CACHE"]).resolve()
    root = project_root()
    return (root / "cache") if root is not None else Path("cache").resolve()


class Once(argparse.Action):
    """Store an option's value, refusing the option given twice (argparse would silently keep the last)."""

    def __call__(self, parser, namespace, values, option_string=None):
        given = vars(namespace).setdefault("_once_given", set())
        if self.dest in given:
            parser.error(f"{'/'.join(self.option_strings)} given more than once; give it once")
        given.add(self.dest)
        setattr(namespace, self.dest, values)


class StrictParser(argparse.ArgumentParser):
    """The entry points' argument parser: a single-valued option (argparse's store action) given twice is refused."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.register("action", None, Once)
        self.register("action", "store", Once)

    def parse_known_args(self, args=None, namespace=None):
        """argparse's, without the record of the options given."""
        ns, rest = super().parse_known_args(args, namespace)
        vars(ns).pop("_once_given", None)
        return ns, rest
