"""Build the dataset from a PostgreSQL OMOP database and from the CSV folder of the same data: time and peak memory.

    source .ci/start_postgres.sh                       # a throwaway server (sets CACICD_TEST_PG_URL)
    python benchmarks/bench_postgres.py                # synthetic data at the paper's size, 58,976 stays
    python benchmarks/bench_postgres.py --n-stays 2000 # seconds

The synthetic OMOP folder (CSV) is written once under --root and COPYied into schema --schema
(replaced). Each measurement runs in its own Python subprocess, which reports its wall time and
its peak resident memory (getrusage RUSAGE_SELF ru_maxrss, after imports and after the build):
  csv build     omop.load_omop(folder): DuckDB reads the CSV files
  pg build      pg.load_pg(url): the aggregation runs in PostgreSQL, only aggregates are fetched
  pg cache hit  pg.load_pg_cached(url) with the dataset cached: connect, check, fingerprint, read
The server's own memory is not in the PostgreSQL column (it is the database's work, in its
processes). Both builds must give the same content hash.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

CHILD = r"""
import json, resource, sys, time, logging
logging.basicConfig(level=logging.WARNING)
from cacicd.data import omop, pg
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
kind, arg, cache = sys.argv[1], sys.argv[2], sys.argv[3]
t = time.perf_counter()
if kind == "csv":
    ds = omop.load_omop(arg)
elif kind == "pg":
    ds = pg.load_pg(arg)
else:
    ds = pg.load_pg_cached(arg, cache)
dt = time.perf_counter() - t
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print("RESULT " + json.dumps({"s": dt, "rss_mib": rss / 1024, "rss0_mib": rss0 / 1024, "hash": ds.content_hash(),
                              "stays": ds.n_stays, "features": len(ds.features), "codes": len(ds.codes)}))
"""


def child(kind: str, arg: str, cache: str) -> dict:
    """Run one measurement in a fresh interpreter; its RESULT line as a dict."""
    out = subprocess.run([sys.executable, "-c", CHILD, kind, arg, cache], capture_output=True, text=True)
    lines = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
    if out.returncode or not lines:
        raise SystemExit(f"{kind} failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-stays", type=int, default=58_976)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--url", default=os.environ.get("CACICD_TEST_PG_URL"), help="a server where --schema may be created")
    ap.add_argument("--schema", default="cacicd_bench")
    ap.add_argument("--root", default=None, help="folder of the synthetic CSV data (default: the cache's synthetic/)")
    ap.add_argument("--keep", action="store_true", help="keep the schema afterwards")
    a = ap.parse_args()
    if not a.url:
        raise SystemExit("no PostgreSQL server: pass --url or `source .ci/start_postgres.sh`")
    import psycopg

    from cacicd.data import pg, synthetic

    t = time.perf_counter()
    folder = synthetic.default_folder(a.n_stays, a.seed, a.root)
    print(f"synthetic OMOP folder: {folder} ({time.perf_counter() - t:.1f} s)")
    sizes = {p.name: p.stat().st_size for p in sorted(folder.glob("*.csv"))}
    print("CSV files: " + ", ".join(f"{k} {v / 2**20:.1f} MiB" for k, v in sizes.items()))
    t = time.perf_counter()
    with psycopg.connect(a.url) as con:
        con.execute(f'DROP SCHEMA IF EXISTS "{a.schema}" CASCADE')
        rows = pg.copy_folder(con, folder, a.schema)
    print(f"COPY into PostgreSQL schema {a.schema}: {time.perf_counter() - t:.1f} s; rows: "
          + ", ".join(f"{k} {v:,}" for k, v in rows.items()))
    url = f"{a.url}{'&' if '?' in a.url else '?'}schema={a.schema}"
    try:
        with tempfile.TemporaryDirectory() as cache:
            res = {"csv build": child("csv", str(folder), cache), "pg build": child("pg", url, cache)}
            child("pg_cached", url, cache)  # fill the cache
            res["pg cache hit"] = child("pg_cached", url, cache)
    finally:
        if not a.keep:
            with psycopg.connect(a.url, autocommit=True) as con:
                con.execute(f'DROP SCHEMA IF EXISTS "{a.schema}" CASCADE')
    c, p = res["csv build"], res["pg build"]
    print(f"\n{c['stays']:,} stays, {c['features']:,} features, {c['codes']:,} codes; "
          f"content hash csv {c['hash']}, pg {p['hash']}: {'IDENTICAL' if c['hash'] == p['hash'] else 'DIFFERENT'}")
    print(f"\n{'':14s} {'time (s)':>9s} {'peak RSS (MiB)':>15s} {'RSS after imports':>18s}")
    for k, r in res.items():
        print(f"{k:14s} {r['s']:9.1f} {r['rss_mib']:15.0f} {r['rss0_mib']:18.0f}")
    print(f"{'pg / csv':14s} {p['s'] / c['s']:9.2f} {p['rss_mib'] / c['rss_mib']:15.2f} "
          f"{(p['rss_mib'] - p['rss0_mib']) / max(c['rss_mib'] - c['rss0_mib'], 1):18.2f}  (last: ratio of the increase over imports)")
    if c["hash"] != p["hash"]:
        raise SystemExit("the two sources gave different datasets")


if __name__ == "__main__":
    main()
