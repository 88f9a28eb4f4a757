"""The store of learning curves that searches of one family share (SQLite file or PostgreSQL URL).

A *node* is one training run of one configuration with one seed, from scratch or from a parent
checkpoint (`"<node>@<epoch>"`). Its record holds, per epoch, the training loss and every member
search's objective on the validation split and on dev; checkpoints (model weights at an epoch) are kept
apart and deleted once no search needs them. Workers claim a node before training it (one row per node:
state running/done, worker, heartbeat), so processes or machines sharing a store never train a node
twice; a node left running by a dead worker is taken over once its heartbeat is older than `stale_s`.
"""
from __future__ import annotations

import json
import logging
import random
import time

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

logger = logging.getLogger(__name__)

_META = sa.MetaData()
NODES = sa.Table(
    "cacicd_nodes", _META,
    sa.Column("store", sa.String(200), primary_key=True),
    sa.Column("node", sa.String(64), primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),  # running | done
    sa.Column("worker", sa.String(200), nullable=False),
    sa.Column("heartbeat", sa.Float, nullable=False),
    sa.Column("record", sa.Text),
)
CHECKPOINTS = sa.Table(
    "cacicd_checkpoints", _META,
    sa.Column("store", sa.String(200), primary_key=True),
    sa.Column("ckpt", sa.String(80), primary_key=True),
    sa.Column("data", sa.LargeBinary, nullable=False),
)


def engine_for(storage: str) -> sa.Engine:
    """SQLAlchemy engine from an SQLite file path, an sqlite:/// URL or a postgresql:// URL (psycopg 3)."""
    s = str(storage)
    if s.startswith(("postgresql://", "postgres://")):
        return sa.create_engine("postgresql+psycopg://" + s.split("://", 1)[1], pool_pre_ping=True)
    if s.startswith("postgresql+psycopg://"):
        return sa.create_engine(s, pool_pre_ping=True)
    if not s.startswith("sqlite:///"):
        s = f"sqlite:///{s}"
    return sa.create_engine(s, connect_args={"timeout": 120})


def _retry(fn, attempts: int = 6):
    """Call fn, retrying when workers race to create the same tables."""
    for i in range(attempts):
        try:
            return fn()
        except (IntegrityError, ProgrammingError, OperationalError):
            if i == attempts - 1:
                raise
            time.sleep(0.3 + random.random())


class CurveStore:
    """Node records and checkpoints of one family search (`store` names it inside the database)."""

    def __init__(self, storage: str, store: str, stale_s: float = 120.0):
        self.engine = engine_for(storage)
        self.store, self.stale_s = store, stale_s
        self.is_shared = self.engine.dialect.name != "sqlite"
        _retry(lambda: _META.create_all(self.engine))

    def record(self, node: str) -> dict | None:
        """The record of a finished node, else None."""
        with self.engine.connect() as c:
            row = c.execute(sa.select(NODES.c.record).where(NODES.c.store == self.store, NODES.c.node == node,
                                                            NODES.c.state == "done")).first()
        return json.loads(row[0]) if row else None

    def records(self) -> dict[str, dict]:
        """Every finished node's record."""
        with self.engine.connect() as c:
            rows = c.execute(sa.select(NODES.c.node, NODES.c.record).where(NODES.c.store == self.store,
                                                                         NODES.c.state == "done")).all()
        return {n: json.loads(r) for n, r in rows}

    def claim(self, node: str, worker: str) -> bool:
        """Take `node` for training: True if it was free, stale, or done but to be extended by us."""
        now = time.time()
        with self.engine.begin() as c:
            row = c.execute(sa.select(NODES.c.state, NODES.c.worker, NODES.c.heartbeat)
                            .where(NODES.c.store == self.store, NODES.c.node == node)).first()
            if row is None:
                try:
                    with c.begin_nested():
                        c.execute(NODES.insert().values(store=self.store, node=node, state="running", worker=worker,
                                                        heartbeat=now, record=None))
                    return True
                except IntegrityError:
                    return False
            state, owner, beat = row
            if state == "running" and owner != worker and now - beat < self.stale_s:
                return False
            res = c.execute(NODES.update().where(NODES.c.store == self.store, NODES.c.node == node,
                                                 NODES.c.state == state, NODES.c.heartbeat == beat)
                            .values(state="running", worker=worker, heartbeat=now))
            if state == "running" and owner != worker:
                logger.info("node %s: taking over from %s (no heartbeat for %.0f s)", node, owner, now - beat)
            return res.rowcount == 1

    def heartbeat(self, node: str, worker: str) -> None:
        """Tell other workers that `node` is still being trained."""
        with self.engine.begin() as c:
            c.execute(NODES.update().where(NODES.c.store == self.store, NODES.c.node == node,
                                           NODES.c.worker == worker).values(heartbeat=time.time()))

    def finish(self, node: str, worker: str, record: dict, checkpoints: dict[str, bytes]) -> None:
        """Save a trained node's record and checkpoints in one transaction (state done)."""
        with self.engine.begin() as c:
            for ckpt, data in checkpoints.items():
                self._replace_checkpoint(c, ckpt, data)
            c.execute(NODES.update().where(NODES.c.store == self.store, NODES.c.node == node)
                      .values(state="done", worker=worker, heartbeat=time.time(), record=json.dumps(record)))

    def release(self) -> int:
        """Forget nodes left running (by a killed process of a local store); returns how many."""
        with self.engine.begin() as c:
            n = c.execute(NODES.delete().where(NODES.c.store == self.store, NODES.c.state == "running")).rowcount
        if n:
            logger.info("store %s: %d node(s) left running by a dead process will be trained again", self.store, n)
        return n

    def checkpoint(self, ckpt: str) -> bytes | None:
        """The weights saved as `ckpt` ("<node>@<epoch>"), else None."""
        with self.engine.connect() as c:
            row = c.execute(sa.select(CHECKPOINTS.c.data).where(CHECKPOINTS.c.store == self.store,
                                                                CHECKPOINTS.c.ckpt == ckpt)).first()
        return bytes(row[0]) if row else None

    def put_checkpoint(self, ckpt: str, data: bytes) -> None:
        """Save (or replace) one checkpoint."""
        with self.engine.begin() as c:
            self._replace_checkpoint(c, ckpt, data)

    def _replace_checkpoint(self, c: sa.Connection, ckpt: str, data: bytes) -> None:
        """Within transaction `c`: the checkpoint `ckpt` is `data` (an older one of that name replaced)."""
        c.execute(CHECKPOINTS.delete().where(CHECKPOINTS.c.store == self.store, CHECKPOINTS.c.ckpt == ckpt))
        c.execute(CHECKPOINTS.insert().values(store=self.store, ckpt=ckpt, data=data))

    def checkpoint_names(self) -> set[str]:
        """Names of the checkpoints kept."""
        with self.engine.connect() as c:
            return set(c.execute(sa.select(CHECKPOINTS.c.ckpt).where(CHECKPOINTS.c.store == self.store)).scalars())

    def keep_checkpoints(self, keep: set[str]) -> int:
        """Delete every checkpoint not in `keep`; returns how many were deleted."""
        drop = sorted(self.checkpoint_names() - set(keep))
        with self.engine.begin() as c:
            for ckpt in drop:
                c.execute(CHECKPOINTS.delete().where(CHECKPOINTS.c.store == self.store, CHECKPOINTS.c.ckpt == ckpt))
        return len(drop)

    def compact(self) -> None:
        """Give the room of deleted checkpoints back to the file system (SQLite VACUUM; PostgreSQL does it itself)."""
        if not self.is_shared:
            with self.engine.connect() as c:
                c.exec_driver_sql("VACUUM")

    def workers(self) -> dict[str, int]:
        """worker -> number of finished nodes it trained."""
        with self.engine.connect() as c:
            rows = c.execute(sa.select(NODES.c.worker, sa.func.count()).where(NODES.c.store == self.store,
                                                                             NODES.c.state == "done")
                             .group_by(NODES.c.worker)).all()
        return dict(rows)

    def dispose(self) -> None:
        """Close the connections."""
        self.engine.dispose()
