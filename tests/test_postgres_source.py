"""PostgreSQL OMOP source (cacicd.data.pg): the CSV folder's dataset bit for bit, clear errors, no password shown.

The postgres-marked tests need CACICD_TEST_PG_URL (`source .ci/start_postgres.sh` starts a throwaway
server); each creates its own schemas and drops them. The others run anywhere.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import uuid
from pathlib import Path

import numpy as np
import pytest

from cacicd.data import sources as data, omop, pg, synthetic
from cacicd.config import get_profile
from cacicd.data.omop import DataError
from conftest import tiny_tables, write_tables

SECRET = "s3cr%40t:pw"  # percent-encoded in the URL; libpq receives "s3cr@t:pw"
PLAIN_SECRET = "s3cr@t:pw"
N_STAYS = 400


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _snapshot(folder: Path) -> dict:
    """Every file under a folder with its size, mtime and SHA-256."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _no_secret(text: str) -> None:
    assert PLAIN_SECRET not in text and SECRET not in text and "s3cr" not in text, text


# ---------------------------------------------------------------- without a server


def test_url_parsing_hides_the_password():
    url = (f"postgresql://alice:{SECRET}@db.example.org:5433/mimic?schema=omop&vocab_schema=vocab"
           "&sslmode=prefer&drug_type_concept_id=none&visit_concept_id=9201,262")
    src = pg.parse_url(url)
    assert src.schema == "omop" and src.vocab_schema == "vocab"
    assert src.options == {"drug_type_concept_id": None, "visit_concept_id": [9201, 262]}
    assert src.conninfo["password"] == PLAIN_SECRET and src.conninfo["sslmode"] == "prefer"
    assert src.conninfo["host"] == "db.example.org" and src.conninfo["port"] == "5433"
    assert str(src) == ("postgresql://alice@db.example.org:5433/mimic?schema=omop&vocab_schema=vocab&sslmode=prefer"
                        "&drug_type_concept_id=none&visit_concept_id=9201,262")
    for text in (str(src), repr(src), src.describe(), src.password_origin(), pg.redact(url)):
        _no_secret(text)
    assert src.password_origin() == "password from the URL"
    # ?password= is a secret too, and other schemes are accepted
    src = pg.parse_url(f"postgres://bob@h/db?password={SECRET}&schema=x")
    assert src.conninfo["password"] == PLAIN_SECRET and src.schema == "x"
    _no_secret(str(src) + repr(src))
    assert pg.split_password(url) == (pg.redact(url), PLAIN_SECRET)
    assert pg.parse_url("postgresql+psycopg://h/db").schema is None
    assert pg.parse_url("postgresql://h/db?password=a+b%26c").conninfo["password"] == "a+b&c"  # '+' stays, as in libpq


def test_run_all_hands_the_password_to_the_notebooks_through_pgpassword(monkeypatch):
    from cacicd.runner import input_key, without_password

    monkeypatch.delenv("PGPASSWORD", raising=False)
    assert without_password("synthetic") == ("synthetic", None)
    bare, password = without_password(f"postgresql://alice:{SECRET}@h:5433/mimic?schema=omop")
    assert bare == "postgresql://alice@h:5433/mimic?schema=omop" and password == PLAIN_SECRET
    assert "PGPASSWORD" not in os.environ  # the kernels get it in their environment (tests/test_runner.py)
    monkeypatch.setenv("PGPASSWORD", password)  # as a notebook's kernel sees it
    assert pg.parse_url(bare).password_origin() == "password from the PGPASSWORD environment variable"
    assert input_key("00_data", "smoke", bare, []) == input_key("00_data", "smoke", without_password(bare)[0], [])


def test_bad_urls_and_options_give_clear_errors(tmp_path):
    with pytest.raises(DataError, match="invalid URL.*parameters read by cacicd: schema, vocab_schema") as e:
        pg.parse_url(f"postgresql://alice:{SECRET}@h/db?shema=omop")
    _no_secret(str(e.value))
    with pytest.raises(DataError, match="schema= is empty"):
        pg.parse_url("postgresql://h/db?schema=")
    with pytest.raises(TypeError, match="unknown option"):
        pg.load_pg("postgresql://h/db", colour="blue")


def test_unreachable_server_message_names_the_place_not_the_password(tmp_path):
    port = _closed_port()
    cache = tmp_path / "cache"
    with pytest.raises(DataError) as e:
        data.load_data(f"postgresql://alice:{SECRET}@127.0.0.1:{port}/mimic?schema=omop", get_profile("smoke"), cache)
    msg = str(e.value)
    assert "cannot reach the server" in msg and f"port {port}" in msg and "database mimic" in msg and "user alice" in msg
    assert "expected a PostgreSQL server accepting connections there" in msg
    assert e.value.__cause__ is None and e.value.__suppress_context__  # no psycopg traceback chained
    _no_secret(msg)
    assert not cache.exists()


# ---------------------------------------------------------------- with a server

@pytest.fixture(scope="module")
def pg_url() -> str:
    url = os.environ.get("CACICD_TEST_PG_URL")
    if not url:
        pytest.skip("CACICD_TEST_PG_URL is unset: `source .ci/start_postgres.sh` starts a throwaway PostgreSQL")
    return url


@pytest.fixture
def schemas(pg_url):
    """A factory of fresh schema names, dropped (CASCADE) after the test."""
    import psycopg

    made = []

    def new(label: str = "s") -> str:
        made.append(f"cacicd_{label}_{uuid.uuid4().hex[:8]}")
        return made[-1]

    yield new
    with psycopg.connect(pg_url, autocommit=True) as con:
        for s in made:
            con.execute(f'DROP SCHEMA IF EXISTS "{s}" CASCADE')


def _execute(url: str, *sql: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as con:
        for s in sql:
            con.execute(s)


def _load_into(url: str, folder: Path, schema: str, vocab_schema: str | None = None) -> dict:
    import psycopg

    with psycopg.connect(url) as con:
        return pg.copy_folder(con, folder, schema, vocab_schema)


def _with(url: str, **params) -> str:
    return url + ("&" if "?" in url else "?") + "&".join(f"{k}={v}" for k, v in params.items())


@pytest.fixture(scope="module")
def synthetic_folder(tmp_path_factory) -> Path:
    return synthetic.write_omop(tmp_path_factory.mktemp("syn"), n_stays=N_STAYS, seed=3)


def assert_same(a, b) -> list[str]:
    """Assert two datasets equal bit for bit (report: all but where it came from); return what was compared."""
    lines = []
    for name in ("X", "Y"):
        ma, mb = getattr(a, name).tocsr(), getattr(b, name).tocsr()
        ma.sort_indices(), mb.sort_indices()
        assert ma.shape == mb.shape and ma.dtype == mb.dtype
        for part in ("indptr", "indices", "data"):
            assert np.array_equal(getattr(ma, part), getattr(mb, part)), (name, part)
            assert getattr(ma, part).tobytes() == getattr(mb, part).tobytes()
        lines.append(f"{name}: {ma.shape} {ma.dtype}, nnz {ma.nnz}: identical")
    for name in ("codes", "features"):
        assert getattr(a, name) == getattr(b, name)
        lines.append(f"{name}: {len(getattr(a, name))}: identical")
    for name in ("visit_ids", "person_ids", "stay_type"):
        va, vb = getattr(a, name), getattr(b, name)
        assert va.dtype == vb.dtype and np.array_equal(va, vb), name
        lines.append(f"{name}: {len(va)} {va.dtype}: identical")
    ra = {k: v for k, v in a.report.items() if k not in ("source", "files", "tables")}
    rb = {k: v for k, v in b.report.items() if k not in ("source", "files", "tables")}
    assert json.dumps(ra, sort_keys=True, default=str) == json.dumps(rb, sort_keys=True, default=str)
    lines.append(f"report: {len(ra)} items identical (source, files/tables differ by design)")
    assert a.content_hash() == b.content_hash()
    lines.append(f"content_hash: {a.content_hash()} == {b.content_hash()}")
    return lines


@pytest.mark.postgres
def test_same_dataset_bit_for_bit_as_the_csv_folder(pg_url, schemas, synthetic_folder, tmp_path, monkeypatch):
    s, v = schemas("cdm"), schemas("vocab")
    rows = _load_into(pg_url, synthetic_folder, s, v)
    prof = get_profile("smoke")
    csv = data.load_data(str(synthetic_folder), prof, tmp_path / "cache_csv")
    # count what leaves the database: aggregates only, never the drug rows
    fetched = []
    orig = pg.PgQuery.fetch_df

    def spy(self, sql, what, params=None):
        df = orig(self, sql, what, params)
        fetched.append((what, len(df)))
        return df

    monkeypatch.setattr(pg.PgQuery, "fetch_df", spy)
    url = _with(pg_url, schema=s, vocab_schema=v)
    db = data.load_data(url, prof, tmp_path / "cache_pg")
    lines = assert_same(csv, db)
    print("\n".join(["CSV folder vs PostgreSQL, synthetic data, %d stays:" % N_STAYS] + lines))
    assert db.source == pg.redact(url) and db.report["tables"]["concept"] == f"{v}.concept"
    biggest = max(n for _, n in fetched)
    assert biggest < rows["drug_exposure"] and biggest == int(db.X[:, 2:].nnz), fetched
    # second call: read from the cache, no rebuild
    monkeypatch.setattr(omop, "build_dataset", lambda *a, **k: pytest.fail("rebuilt a cached dataset"))
    assert data.load_data(url, prof, tmp_path / "cache_pg").content_hash() == db.content_hash()
    assert len(list((tmp_path / "cache_pg" / "omop").glob("*/meta.json"))) == 1
    monkeypatch.undo()
    # a changed row changes the key: a new cache entry
    _execute(pg_url, f"UPDATE {s}.drug_exposure SET drug_concept_id = 0 WHERE visit_occurrence_id = 1")
    again = data.load_data(url, prof, tmp_path / "cache_pg")
    assert len(list((tmp_path / "cache_pg" / "omop").glob("*/meta.json"))) == 2
    assert again.content_hash() != db.content_hash()


@pytest.mark.postgres
def test_url_without_schema_reads_the_sessions_current_schema(pg_url, schemas, synthetic_folder, tmp_path):
    """No ?schema=: the session's current schema (public, or what the role's search_path names), not pg_catalog."""
    import psycopg

    with psycopg.connect(pg_url) as con:
        if con.execute("SELECT to_regclass('public.person') IS NOT NULL").fetchone()[0]:
            pytest.skip("schema public of the test database already holds an OMOP table")
    prof = get_profile("smoke")
    csv = data.load_data(str(synthetic_folder), prof, tmp_path / "cache_csv").content_hash()
    try:
        _load_into(pg_url, synthetic_folder, "public")
        bare = pg_url.split("?")[0]
        db = data.load_data(bare, prof, tmp_path / "cache_pg")
        assert db.report["tables"]["person"] == "public.person" and db.content_hash() == csv
        assert data.load_data(_with(bare, schema="public"), prof, tmp_path / "cache_pg").content_hash() == csv
    finally:
        _execute(pg_url, *[f"DROP TABLE IF EXISTS public.{t}" for t in omop.SCHEMA])
    s = schemas("path")  # a search_path naming another schema first (libpq's options= parameter)
    _load_into(pg_url, synthetic_folder, s)
    db = data.load_data(_with(bare, options=f"-csearch_path%3D{s}"), prof, tmp_path / "cache_path")
    assert db.report["tables"]["person"] == f"{s}.person" and db.content_hash() == csv
    with pytest.raises(DataError, match=r"the session has no current schema .*name the schema of the OMOP tables "
                                        r"with \?schema="):
        data.load_data(_with(bare, options="-csearch_path%3Dno_such_schema"), prof, tmp_path / "cache_pg")


@pytest.mark.postgres
def test_tiny_folder_with_loose_types_and_options(pg_url, schemas, tmp_path):
    """Hand-built edge cases (NULL months, 64-bit ids, absent optional columns), ids and codes as text."""
    folder = write_tables(tmp_path / "tiny", tiny_tables())
    s = schemas("tiny")
    _load_into(pg_url, folder, s)
    for opts in ({}, {"drug_type_concept_id": "none", "ingredient_mapping": "drug_concept"}):
        want = omop.load_omop(folder, **{k: (None if v == "none" else v) for k, v in opts.items()})
        assert_same(want, pg.load_pg(_with(pg_url, schema=s, **opts)))
    _execute(pg_url, f"ALTER TABLE {s}.visit_occurrence ALTER COLUMN visit_occurrence_id TYPE text",
             f"UPDATE {s}.visit_occurrence SET visit_occurrence_id = ' ' || visit_occurrence_id || ' '",
             f"ALTER TABLE {s}.drug_exposure ALTER COLUMN drug_concept_id TYPE numeric",
             f"ALTER TABLE {s}.person ALTER COLUMN year_of_birth TYPE varchar(8)",
             f"ALTER TABLE {s}.condition_occurrence ALTER COLUMN condition_source_value TYPE char(20)",
             f"ALTER TABLE {s}.visit_occurrence ALTER COLUMN visit_start_date TYPE timestamptz",
             f"UPDATE {s}.visit_detail SET visit_detail_source_value = '' WHERE visit_detail_id = 3")
    t = tiny_tables()
    t["visit_detail"][2]["visit_detail_source_value"] = None  # an empty CSV cell, '' in the database: no service
    want = omop.load_omop(write_tables(tmp_path / "tiny2", t))
    assert want.stay_type[list(want.visit_ids).index(11)] == "unknown"
    assert_same(want, pg.load_pg(_with(pg_url, schema=s)))


@pytest.mark.postgres
def test_empty_drug_table_is_refused_unless_allow_no_drugs(pg_url, schemas, tmp_path):
    folder = write_tables(tmp_path / "tiny", tiny_tables())
    s = schemas("nodrug")
    _load_into(pg_url, folder, s)
    _execute(pg_url, f"DELETE FROM {s}.drug_exposure", f"DELETE FROM {s}.concept_ancestor")
    url, prof = _with(pg_url, schema=s), get_profile("smoke")
    with pytest.raises(DataError, match=r"no stay has a drug feature \(drug_rows 0: its table has no row\)"):
        data.load_data(url, prof, tmp_path / "cache")
    ds = data.load_data(_with(url, allow_no_drugs="true"), prof, tmp_path / "cache")
    assert ds.features == ["sex", "age"] and ds.report["drug_rows"] == 0 and len(ds.codes) > 0
    _execute(pg_url, f"DELETE FROM {s}.visit_detail", f"DELETE FROM {s}.visit_occurrence")
    with pytest.raises(DataError, match=rf"table {s}.visit_occurrence is empty \(0 rows\)"):
        data.load_data(_with(url, allow_no_drugs="true"), prof, tmp_path / "cache")


# Each bad input: (name, SQL that damages the copy in schema {s}, URL change, expected message).
BAD_INPUTS = [
    ("unreachable server", [], lambda u, s: u.replace(u.split("@")[1].split("/")[0], f"127.0.0.1:{_closed_port()}"),
     r"cannot reach the server \(host 127\.0\.0\.1, port \d+, database \w+, user postgres\); expected a PostgreSQL "
     r"server accepting connections there"),
    ("missing database", [], lambda u, s: u.replace("/" + u.split("/")[3].split("?")[0], "/cacicd_no_such_db"),
     r"the database does not exist \(.*database cacicd_no_such_db.*\); expected an existing database"),
    ("missing schema", [], lambda u, s: u.replace(f"schema={s}", "schema=no_such_schema"),
     r"schema no_such_schema \(the CDM schema\) does not exist in the database; expected the OMOP CDM tables person, "
     r"visit_occurrence, drug_exposure, condition_occurrence there \(schemas present: .*\)"),
    ("missing vocabulary schema", [], lambda u, s: u + "&vocab_schema=no_such_vocab",
     r"schema no_such_vocab \(the vocabulary schema\) does not exist.*expected the OMOP vocabulary tables concept, "
     r"concept_ancestor"),
    ("missing table", ["DROP TABLE {s}.drug_exposure"], None,
     r"missing table\(s\) {s}\.drug_exposure; expected the OMOP CDM tables person, visit_occurrence, drug_exposure, "
     r"condition_occurrence in schema {s} \(found there: .*\)"),
    ("missing vocabulary table", ["DROP TABLE {s}.concept_ancestor"], None,
     r"\(vocabulary schema {s}\): no concept_ancestor table, so drugs cannot be mapped to RxNorm ingredients"),
    ("missing column", ["ALTER TABLE {s}.visit_occurrence DROP COLUMN visit_start_date"], None,
     r"table {s}\.visit_occurrence lacks column\(s\) visit_start_date \(date\) \(found: "),
    ("id column as text with non-numbers",
     ["ALTER TABLE {s}.visit_occurrence ALTER COLUMN visit_occurrence_id TYPE text",
      "UPDATE {s}.visit_occurrence SET visit_occurrence_id = 'V' || visit_occurrence_id WHERE visit_occurrence_id::int < 3"],
     None, r"column {s}\.visit_occurrence\.visit_occurrence_id \(type text\): 2 value\(s\) are not integers "
           r"\(e\.g\. 'V[12]', 'V[12]'\); expected integers"),
    ("date column as integer",
     ["ALTER TABLE {s}.visit_occurrence ALTER COLUMN visit_start_date TYPE integer USING 20000101"], None,
     r"column {s}\.visit_occurrence\.visit_start_date has type integer, expected dates \(date, timestamp\)"),
    ("code column as a number",
     ["ALTER TABLE {s}.condition_occurrence ALTER COLUMN condition_source_value TYPE bigint "
      "USING nullif(regexp_replace(condition_source_value, '[^0-9]', '', 'g'), '')::bigint"], None,
     r"column {s}\.condition_occurrence\.condition_source_value has type bigint, expected text"),
    ("id column as fractional numbers",
     ["ALTER TABLE {s}.drug_exposure ALTER COLUMN drug_concept_id TYPE numeric",
      "UPDATE {s}.drug_exposure SET drug_concept_id = drug_concept_id + 0.5 WHERE visit_occurrence_id = 1"], None,
     r"column {s}\.drug_exposure\.drug_concept_id \(type numeric\): \d+ value\(s\) are not integers"),
    ("empty required value", ["UPDATE {s}.visit_occurrence SET person_id = NULL WHERE visit_occurrence_id = 1"], None,
     r"column {s}\.visit_occurrence\.person_id: 1 empty value\(s\) in a column that needs one in every row"),
    ("unknown URL parameter", [], lambda u, s: u + "&shema=x",
     r"invalid URL: invalid URI query parameter: \"shema\""),
]


@pytest.fixture(scope="module")
def loaded_schema(pg_url, tmp_path_factory, synthetic_folder):
    """A schema holding the synthetic tables, copied per bad input."""
    import psycopg

    s = f"cacicd_base_{uuid.uuid4().hex[:8]}"
    _load_into(pg_url, synthetic_folder, s)
    yield s
    with psycopg.connect(pg_url, autocommit=True) as con:
        con.execute(f'DROP SCHEMA IF EXISTS "{s}" CASCADE')


@pytest.mark.postgres
@pytest.mark.parametrize("name,damage,url_change,expected", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_inputs_give_clear_errors_and_leave_the_cache_alone(pg_url, schemas, loaded_schema, synthetic_folder,
                                                               tmp_path, name, damage, url_change, expected):
    s = schemas("bad")
    _execute(pg_url, f"CREATE SCHEMA {s}", *[f"CREATE TABLE {s}.{t} AS TABLE {loaded_schema}.{t}" for t in omop.SCHEMA],
             *[d.format(s=s) for d in damage])
    cache = tmp_path / "cache"
    prof = get_profile("smoke")
    data.load_data(str(synthetic_folder), prof, cache)  # a cache holding one good dataset
    before = _snapshot(cache)
    url = _with(pg_url, schema=s)
    if url_change:
        url = url_change(url, s)
    with pytest.raises(DataError) as e:
        data.load_data(url, prof, cache)
    msg = str(e.value)
    print(f"BAD INPUT {name}: {msg}")
    assert _snapshot(cache) == before
    assert e.value.__cause__ is None
    import re

    assert re.search(expected.format(s=s), msg), msg


@pytest.mark.postgres
def test_credentials_from_url_env_and_pgpass_never_shown(pg_url, schemas, synthetic_folder, tmp_path, monkeypatch,
                                                         caplog):
    pw_url = os.environ.get("CACICD_TEST_PG_PW_URL")
    if not pw_url:
        pytest.skip("CACICD_TEST_PG_PW_URL is unset (.ci/start_postgres.sh sets up a role with a password)")
    bare, password = pg.split_password(pw_url)
    for var in ("PGPASSWORD", "PGPASSFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.pgpass of the user running the tests
    prof = get_profile("smoke")
    cache = tmp_path / "cache"
    # bad password in the URL
    bad = pw_url.replace(f":{password}@", f":{SECRET}@")
    with pytest.raises(DataError, match=r"authentication failed \(.*user cacicd_pw; password from the URL\); "
                                        r"expected valid credentials") as e:
        data.load_data(bad, prof, cache)
    print(f"BAD INPUT bad password: {e.value}")
    _no_secret(str(e.value))
    # no password at all
    with pytest.raises(DataError, match=r"authentication failed .*no password given \(none in the URL, "
                                        r"PGPASSWORD or ~/\.pgpass\)") as e:
        data.load_data(bare, prof, cache)
    print(f"BAD INPUT no password: {e.value}")
    # wrong password in PGPASSWORD, then the right one from PGPASSWORD, then from a password file
    monkeypatch.setenv("PGPASSWORD", PLAIN_SECRET)
    with pytest.raises(DataError, match=r"password from the PGPASSWORD environment variable") as e:
        data.load_data(bare, prof, cache)
    _no_secret(str(e.value))
    assert not cache.exists()
    src = pg.parse_url(_with(bare, schema="public"))
    monkeypatch.setenv("PGPASSWORD", password)
    pg.connect(src).close()
    monkeypatch.delenv("PGPASSWORD")
    passfile = tmp_path / "pgpass"
    host, port = src.conninfo["host"], src.conninfo["port"]
    passfile.write_text(f"{host}:{port}:*:cacicd_pw:{password}\n")
    passfile.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(passfile))
    pg.connect(src).close()
    monkeypatch.delenv("PGPASSFILE")
    # a full load with the password in the URL: nothing shows it (the role may read one schema)
    s = schemas("pw")
    _load_into(pg_url, synthetic_folder, s)
    _execute(pg_url, f"GRANT USAGE ON SCHEMA {s} TO cacicd_pw", f"GRANT SELECT ON ALL TABLES IN SCHEMA {s} TO cacicd_pw")
    caplog.set_level(logging.DEBUG)
    good = _with(pw_url, schema=s)
    ds = data.load_data(good, prof, cache)
    assert ds.n_stays == N_STAYS and password not in ds.source and "cacicd_pw@" in ds.source
    again = data.load_data(good, prof, cache)
    for text in (ds.source, again.source, json.dumps(ds.report, default=str), caplog.text):
        assert password not in text
    for p in cache.rglob("*"):
        if p.is_file():
            assert password.encode() not in p.read_bytes(), p
    # a role without rights on the schema: the database's refusal, named
    s2 = schemas("noright")
    _execute(pg_url, f"CREATE SCHEMA {s2}", *[f"CREATE TABLE {s2}.{t} AS TABLE {s}.{t}" for t in omop.SCHEMA])
    with pytest.raises(DataError, match=r"InsufficientPrivilege: permission denied for schema "
                                        r"cacicd_noright_\w+; expected USAGE on the schema") as e:
        data.load_data(_with(pw_url, schema=s2), prof, cache)
    print(f"BAD INPUT no rights on the schema: {e.value}")
    _no_secret(str(e.value))
