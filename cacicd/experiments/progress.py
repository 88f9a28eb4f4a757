"""Progress of a run's searches that a person can follow: nodes and epochs done of those planned, with an ETA."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

from cacicd.models.search import Progress


@dataclass
class Board:
    """Every search's `Progress`, summed into one tqdm bar of epochs (its total: the schedules' upper bound,
    lowered as early stopping ends nodes sooner) with searches and nodes done in its postfix."""

    enabled: bool = True
    searches: dict[str, Progress] = field(default_factory=dict)
    finished: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _bar: object = field(default=None, repr=False)

    def update(self, name: str, progress: Progress) -> None:
        """A search's progress changed (a round started or ended, a node finished)."""
        with self._lock:
            self.searches[name] = progress
            self._refresh()

    def done(self, name: str, line: str) -> None:
        """A search finished: one line about it above the bar."""
        with self._lock:
            self.finished.add(name)
            if self._bar is not None:
                self._bar.write(line)
            self._refresh()

    def totals(self) -> dict[str, int]:
        """Summed nodes and epochs, planned and done, and searches finished of those announced."""
        ps = list(self.searches.values())
        return {"searches": len(ps), "searches_done": len(self.finished),
                "nodes_planned": sum(max(p.nodes_planned, p.nodes_done) for p in ps),
                "nodes_done": sum(p.nodes_done for p in ps),
                "epochs_planned": sum(max(p.epochs_planned, p.epochs_done) for p in ps),
                "epochs_done": sum(p.epochs_done for p in ps)}

    def _refresh(self) -> None:
        if not self.enabled:
            return
        t = self.totals()
        if self._bar is None:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=t["epochs_planned"], unit="epoch", desc="training", dynamic_ncols=True)
        self._bar.total = t["epochs_planned"]
        self._bar.n = t["epochs_done"]
        self._bar.set_postfix_str(f"searches {t['searches_done']}/{t['searches']}, networks "
                                  f"{t['nodes_done']}/{t['nodes_planned']}", refresh=False)
        self._bar.refresh()

    def close(self) -> None:
        """Close the bar."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
