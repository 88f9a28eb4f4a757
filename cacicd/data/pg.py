"""PostgreSQL OMOP CDM source (e.g. the MIT-LCP mimic-omop database) -> the same `Dataset` as a folder.

URL. `postgresql://[user[:password]@]host[:port]/dbname?schema=omop&vocab_schema=vocab` (also
`postgres://`, `postgresql+psycopg://`). Parameters read here: `schema` (the CDM tables; default the
session's current_schema(), usually public), `vocab_schema` (concept, concept_ancestor; default
`schema`) and the loader options of `cacicd.data.omop.build_dataset` (drug_type_concept_id,
ingredient_mapping, visit_concept_id; values read by `cacicd.data.options.parse_value`). Every other parameter
(sslmode, connect_timeout, options, passfile, ...) goes to libpq unchanged. Credentials come
from libpq's usual places, in its order: the URL, PGPASSWORD/PGUSER/PGHOST/... environment
variables, the password file (~/.pgpass or PGPASSFILE). `str()`/`repr()` of a `PgSource`, every
error message, log line, Dataset.source, Dataset.report and cache key show the URL without its
password (`redact`).

Reading. One read-only transaction. The catalog (pg_namespace, pg_class, pg_attribute) is checked
first: schemas, tables (required: person, visit_occurrence, drug_exposure, condition_occurrence),
columns and their types (`cacicd.data.omop.SCHEMA`); integers may be smallint/integer/bigint, numeric or
float holding whole numbers, or text holding integers; dates date or timestamp (with or without
time zone, read in UTC); codes text, varchar or char. A violation raises `DataError` naming
schema.table.column and what was expected. Each table is then read through a typed subquery
(`WITH person AS NOT MATERIALIZED (SELECT person_id, ... FROM "omop"."person")`) placed in front of
the very `SQL_*` statements that the folder source runs on DuckDB (`cacicd.data.omop.build_dataset`), so
only the needed columns are read, the aggregation (visit x ingredient, visit x code) runs in
PostgreSQL and only its results travel, fetched in chunks through a server-side cursor. Nothing
is written to the database (no temporary table or view). PostgreSQL 11 or later (tested with 15).

Cache. `load_pg_cached` keys the dataset by the loader version, the options, and per table the
row count and the sum of a 64-bit hash (hashtextextended) of each typed row's text, computed by
one scan of each table in SQL: a cheap and honest identity of the content that the dataset is
built from (any change to a read column or row changes it; the server, schema names, user and
password do not enter it). Errors raise before anything is written under the cache folder.
"""
from __future__ import annotations

import csv
import getpass
import gzip
import hashlib
import io
import json
import logging
import os
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote

import pandas as pd
import psycopg
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from psycopg.conninfo import conninfo_to_dict

from cacicd.data import omop
from cacicd.data.cache import cached, with_defaults
from cacicd.data.dataset import Dataset
from cacicd.data.omop.schema import DataError
from cacicd.data.omop.sql import ident
from cacicd.data.options import parse_value

log = logging.getLogger(__name__)

PG_LOADER_VERSION = "omop-pg-1"
SCHEMES = ("postgresql://", "postgres://", "postgresql+psycopg://")
SOURCE_PARAMS = ("schema", "vocab_schema")
LOADER_OPTIONS = tuple(omop.OPTIONS)
FETCH_ROWS = 100_000
DEFAULT_CONNECT_TIMEOUT = 10

INT_TYPES = ("smallint", "integer", "bigint")
NUMBER_TYPES = ("numeric", "real", "double precision")
TEXT_TYPES = ("text", "character varying", "character")
DATE_TYPES = ("date", "timestamp without time zone", "timestamp with time zone")
EXPECTED = {"int": "integers (smallint, integer, bigint; numeric or text holding whole numbers)",
            "date": "dates (date, timestamp)", "datetime": "date-times (timestamp, date)",
            "str": "text (text, varchar, char; codes are read as strings)"}
SQL_TYPE = {"int": "bigint", "date": "date", "datetime": "timestamp", "str": "text"}
INT_PATTERN = "^[+-]?[0-9]{1,19}$"


# ---------------------------------------------------------------- the URL, without leaking the password


def _split_url(url: str) -> tuple[str, str, str | None, str, list[tuple[str, str]]]:
    """(user, hosts, password or None, path, query items) of a postgresql:// URL; no libpq involved."""
    s = str(url).strip()
    for scheme in SCHEMES:
        if s.startswith(scheme):
            s = s[len(scheme):]
            break
    else:
        raise DataError(f"a PostgreSQL source starts with {' or '.join(SCHEMES)}")
    s = s.partition("#")[0]
    s, _, query = s.partition("?")
    netloc, slash, path = s.partition("/")
    userinfo, _, hosts = netloc.rpartition("@")
    user, colon, password = userinfo.partition(":")
    items = [(unquote(k), unquote(v)) for k, _, v in (x.partition("=") for x in query.split("&") if x)]  # as libpq: no '+'
    return user, hosts, (password if colon else None), slash + path, items


def redact(url: str) -> str:
    """The URL with its password (userinfo or ?password=) removed, e.g. for messages and logs."""
    try:
        user, hosts, _, path, items = _split_url(url)
    except DataError:
        return "postgresql://(unparsable URL)"
    query = "&".join(f"{k}={quote(v, safe=',:/')}" for k, v in items if k != "password")
    return f"postgresql://{user + '@' if user else ''}{hosts}{path}{'?' + query if query else ''}"


def _scrub(message: str, secrets: Sequence[str]) -> str:
    """A message with every secret (raw and percent-decoded) replaced by ***."""
    for s in secrets:
        for form in {s, unquote(s)}:
            if form:
                message = message.replace(form, "***")
    return message


@dataclass(frozen=True)
class PgSource:
    """A parsed postgresql:// source: what to connect to and which schemas; str() and repr() hide the password."""

    display: str
    schema: str | None = None
    vocab_schema: str | None = None
    options: dict = field(default_factory=dict)
    conninfo: dict = field(default_factory=dict, repr=False, compare=False)

    def __str__(self) -> str:
        return self.display

    def describe(self) -> str:
        """host, port, database and user as libpq will use them (URL, else PG* variables, else defaults)."""
        c, env = self.conninfo, os.environ
        host = c.get("host") or c.get("hostaddr") or env.get("PGHOST") or "the local socket"
        port = c.get("port") or env.get("PGPORT") or "5432"
        user = c.get("user") or env.get("PGUSER") or getpass.getuser()
        db = c.get("dbname") or env.get("PGDATABASE") or user
        return f"host {host}, port {port}, database {db}, user {user}"

    def password_origin(self) -> str:
        """Where libpq takes the password from (never the password itself)."""
        if "password" in self.conninfo:
            return "password from the URL"
        if os.environ.get("PGPASSWORD"):
            return "password from the PGPASSWORD environment variable"
        passfile = self.conninfo.get("passfile") or os.environ.get("PGPASSFILE") or str(Path("~/.pgpass").expanduser())
        if Path(passfile).is_file():
            return f"password from the password file {passfile} if it has a matching line"
        return "no password given (none in the URL, PGPASSWORD or ~/.pgpass)"


def parse_url(url: str) -> PgSource:
    """A `PgSource` from a postgresql:// URL (see the module docstring); no connection is made."""
    user, hosts, password, path, items = _split_url(url)
    secrets = [password] if password else []
    secrets += [v for k, v in items if k == "password" and v]
    ours = {k: v for k, v in items if k in SOURCE_PARAMS + LOADER_OPTIONS}
    rest = [(k, v) for k, v in items if k not in SOURCE_PARAMS + LOADER_OPTIONS]
    userinfo = user + (":" + password if password is not None else "")
    libpq_url = f"postgresql://{userinfo + '@' if userinfo else ''}{hosts}{path}"
    if rest:
        libpq_url += "?" + "&".join(f"{quote(k)}={quote(v, safe=',:/')}" for k, v in rest)
    display = redact(url)
    try:
        params = conninfo_to_dict(libpq_url)
    except psycopg.Error as e:
        raise DataError(f"PostgreSQL source {display}: invalid URL: {_scrub(_one_line(e), secrets)} "
                        f"(parameters read by cacicd: {', '.join(SOURCE_PARAMS + LOADER_OPTIONS)}; "
                        "the others go to libpq)") from None
    params = {k: v for k, v in params.items() if v not in (None, "")}
    for k in SOURCE_PARAMS:
        if k in ours and not ours[k]:
            raise DataError(f"PostgreSQL source {display}: {k}= is empty; expected a schema name")
    options = {k: parse_value(ours[k]) for k in LOADER_OPTIONS if k in ours}
    return PgSource(display, ours.get("schema"), ours.get("vocab_schema"), options, params)


def split_password(url: str) -> tuple[str, str | None]:
    """(the URL without its password, the password or None): to hand the password on through PGPASSWORD."""
    user, hosts, password, path, items = _split_url(url)
    pw = unquote(password) if password is not None else None
    for k, v in items:
        if k == "password":
            pw = v
    return redact(url), pw


def _one_line(e: BaseException) -> str:
    """An exception's message on one line (libpq splits its hints over lines)."""
    return re.sub(r"\s+", " ", str(e)).strip()


# ---------------------------------------------------------------- connection and queries


CURRENT_SCHEMA = "cacicd.current_schema"  # the session's current schema, kept before search_path is narrowed


def connect(src: PgSource):
    """A read-only psycopg connection; connection failures become a DataError without the password.

    The session's own current_schema() (what a URL without ?schema= reads) is kept in the session
    setting `CURRENT_SCHEMA` before search_path is narrowed to pg_catalog.
    """
    kw = dict(src.conninfo)
    if "connect_timeout" not in kw and not os.environ.get("PGCONNECT_TIMEOUT"):
        kw["connect_timeout"] = str(DEFAULT_CONNECT_TIMEOUT)
    kw.setdefault("application_name", "cacicd")
    try:
        con = psycopg.connect(**kw)
    except psycopg.Error as e:
        raise DataError(_connect_message(src, e)) from None
    try:
        con.read_only = True
        with con.cursor() as cur:
            cur.execute("SELECT set_config(%s, coalesce(current_schema(), ''), false)", (CURRENT_SCHEMA,))
            for name, value in (("search_path", "pg_catalog, pg_temp"), ("DateStyle", "ISO, YMD"),
                                ("TimeZone", "UTC"), ("IntervalStyle", "postgres"),
                                ("cursor_tuple_fraction", "1")):
                cur.execute("SELECT set_config(%s, %s, false)", (name, value))
        con.commit()
    except psycopg.Error as e:
        con.close()
        raise DataError(f"PostgreSQL source {src}: cannot set up the session: {_scrub(_one_line(e), _secrets(src))}") from None
    return con


def _secrets(src: PgSource) -> list[str]:
    return [src.conninfo["password"]] if src.conninfo.get("password") else []


def _connect_message(src: PgSource, e: BaseException) -> str:
    """A clear message for a failed connection: what was expected, where, libpq's reason; no password."""
    reason = _scrub(_one_line(e), _secrets(src))
    reason = re.sub(r"^connection failed: ", "", reason)
    low = reason.lower()
    where = src.describe()
    if "password authentication failed" in low or "no password supplied" in low or "authentication failed" in low:
        what = (f"authentication failed ({where}; {src.password_origin()}); expected valid "
                "credentials in the URL, PGUSER/PGPASSWORD or ~/.pgpass")
    elif re.search(r'database ".*" does not exist', low):
        what = f"the database does not exist ({where}); expected an existing database in the URL path"
    elif re.search(r'role ".*" does not exist', low):
        what = f"the user does not exist ({where}); expected an existing role"
    elif any(s in low for s in ("connection refused", "could not translate host name", "timeout expired",
                                "no route to host", "network is unreachable", "could not connect",
                                "no such file or directory", "name or service not known")):
        what = f"cannot reach the server ({where}); expected a PostgreSQL server accepting connections there"
    else:
        what = f"cannot connect ({where})"
    return f"PostgreSQL source {src}: {what}. libpq: {reason}"


class PgQuery:
    """The query function of `cacicd.data.omop.build_dataset` on PostgreSQL: SQL -> DataFrame, tables read typed.

    `tables` maps each OMOP table name to the typed SELECT that reads it; every statement is prefixed
    with those of its tables as non-materialized CTEs, so the `SQL_*` text runs unchanged.
    """

    def __init__(self, con, source: str, tables: dict[str, str] | None = None) -> None:
        self.con = con
        self.source = source
        self.tables: dict[str, str] = dict(tables or {})
        self.schemas: tuple[str, str] | None = None  # (CDM schema, vocabulary schema), set by `prepare`
        self.not_materialized = "NOT MATERIALIZED " if con.info.server_version >= 120000 else ""

    def with_tables(self, sql: str) -> str:
        """The statement with the typed table CTEs it refers to in front."""
        used = [t for t in self.tables if re.search(rf"\b{t}\b", sql)]
        if not used:
            return sql
        ctes = ",\n".join(f"{t} AS {self.not_materialized}({self.tables[t]})" for t in used)
        body = sql.lstrip()
        if re.match(r"(?i)with\b", body):
            return f"WITH {ctes},\n{body[4:].lstrip()}"
        return f"WITH {ctes}\n{body}"

    def fetch_df(self, sql: str, what: str, params=None) -> pd.DataFrame:
        """Run one statement through a server-side cursor, in chunks; errors become a DataError naming `what`."""
        sql = self.with_tables(sql)
        chunks = []
        t0 = time.perf_counter()
        try:
            with self.con.cursor(name="cacicd_fetch", binary=True) as cur:
                cur.itersize = FETCH_ROWS
                cur.execute(sql, params)
                names = [d.name for d in cur.description]
                while True:
                    rows = cur.fetchmany(FETCH_ROWS)
                    if not rows:
                        break
                    chunks.append(pd.DataFrame.from_records(rows, columns=names))
        except psycopg.Error as e:
            self.con.rollback()
            hint = ("; expected USAGE on the schema(s) and SELECT on the OMOP tables for this user"
                    if isinstance(e, psycopg.errors.InsufficientPrivilege) else "")
            raise DataError(f"{what}: {type(e).__name__}: {_one_line(e).split(' LINE ')[0]}{hint}") from None
        log.debug("%s: %d row(s) in %.2f s", what, sum(len(c) for c in chunks), time.perf_counter() - t0)
        if not chunks:
            return pd.DataFrame({n: pd.Series([], dtype=object) for n in names})
        return chunks[0] if len(chunks) == 1 else pd.concat(chunks, ignore_index=True)


# ---------------------------------------------------------------- catalog checks and typed reads

SQL_CATALOG = """
SELECT n.nspname AS schema_name, c.relname AS table_name, a.attname AS column_name,
       format_type(CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE a.atttypid END, NULL) AS column_type,
       a.attnotnull AS not_null
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
WHERE n.nspname = ANY(%s) AND c.relkind IN ('r', 'v', 'm', 'p', 'f')
ORDER BY n.nspname, c.relname, a.attnum
"""


def _typed(col: str, pgtype: str, kind: str, where: str) -> tuple[str, str | None]:
    """(SQL expression of the typed column, SQL condition of a bad value or None); DataError for a wrong type."""
    if kind == "int":
        if pgtype in INT_TYPES:
            return f"CAST({col} AS bigint)", None
        if pgtype in NUMBER_TYPES:
            return (f"CAST({col} AS bigint)",
                    f"{col} IS NOT NULL AND (CAST({col} AS text) IN ('NaN', 'Infinity', '-Infinity') "
                    f"OR {col} <> trunc({col}) OR abs({col}) > 9.2e18)")
        if pgtype in TEXT_TYPES:
            v = f"NULLIF(trim({col}), '')"
            digits = f"ltrim({v}, '+-')"
            return (f"CAST({v} AS bigint)",
                    f"{v} IS NOT NULL AND ({v} !~ '{INT_PATTERN}' "
                    f"OR (length({digits}) = 19 AND {digits} > '9223372036854775807'))")
    elif kind in ("date", "datetime"):
        if pgtype in DATE_TYPES:
            return f"CAST({col} AS {SQL_TYPE[kind]})", None
    elif kind == "str":
        if pgtype in TEXT_TYPES:
            return f"CAST({col} AS text)", None
    raise DataError(f"{where} has type {pgtype}, expected {EXPECTED[kind]}")


def _check_table(q: PgQuery, schema: str, relname: str, table: str, cols: dict[str, tuple[str, str, bool]]) -> str:
    """Validate the columns of schema.name (OMOP `table`); return the typed SELECT that reads it."""
    label, qualified = f"{schema}.{relname}", f"{ident(schema)}.{ident(relname)}"
    spec = omop.SCHEMA[table]
    missing = [c for c in spec if c.required and c.name not in cols]
    if missing:
        raise DataError(f"{q.source}: table {label} lacks column(s) "
                        f"{', '.join(f'{c.name} ({SQL_TYPE[c.kind]})' for c in missing)} "
                        f"(found: {', '.join(list(cols)[:30]) or 'no column'})")
    selects, checks = [], []
    for c in spec:
        if c.name not in cols:
            selects.append(f"CAST(NULL AS {SQL_TYPE[c.kind]}) AS {c.name}")
            continue
        name, pgtype, declared_not_null = cols[c.name]
        where = f"{q.source}: column {label}.{name}"
        expr, bad = _typed(ident(name), pgtype, c.kind, where)
        if bad is not None:
            checks.append((f"bad value in {name}", bad, c, name, pgtype))
        if c.not_null and not declared_not_null:
            isnull = f"NULLIF(trim({ident(name)}), '') IS NULL" if pgtype in TEXT_TYPES else f"{ident(name)} IS NULL"
            checks.append((f"empty value in {name}", isnull, c, name, pgtype))
        selects.append(f"{expr} AS {c.name}")
    source = f"SELECT {', '.join(selects)} FROM {qualified}"
    if checks:
        counts = q.fetch_df("SELECT " + ", ".join(f"count(*) FILTER (WHERE {cond}) AS c{i}"
                                                  for i, (_, cond, *_r) in enumerate(checks)) + f" FROM {qualified}",
                            f"{q.source}: checking table {label}").iloc[0]
        for i, (what, cond, c, name, pgtype) in enumerate(checks):
            n = int(counts[f"c{i}"])
            if not n:
                continue
            if what.startswith("bad"):
                ex = q.fetch_df(f"SELECT DISTINCT CAST({ident(name)} AS text) AS v FROM {qualified} WHERE {cond} LIMIT 3",
                                f"{q.source}: examples of {label}.{name}")["v"].tolist()
                raise DataError(f"{q.source}: column {label}.{name} (type {pgtype}): {n} value(s) are not "
                                f"{'integers' if c.kind == 'int' else c.kind + 's'} "
                                f"(e.g. {', '.join(repr(v) for v in ex)}); expected {EXPECTED[c.kind]}")
            raise DataError(f"{q.source}: column {label}.{name}: {n} empty value(s) in a column that needs "
                            "one in every row")
    return source


def prepare(q: PgQuery, src: PgSource) -> dict[str, str]:
    """Check schemas, tables, columns and types in the catalog; register the typed reads in `q`.

    Returns {table: "schema.table"} of the OMOP tables found.
    """
    schema = src.schema or str(q.fetch_df("SELECT current_setting(%s) AS s", f"{src}: reading current_schema()",
                                          (CURRENT_SCHEMA,))["s"][0])
    if not schema:
        raise DataError(f"{src}: the session has no current schema (no schema of its search_path exists); "
                        "name the schema of the OMOP tables with ?schema=")
    vocab = src.vocab_schema or schema
    q.schemas = (schema, vocab)
    schemas = q.fetch_df("SELECT nspname FROM pg_catalog.pg_namespace ORDER BY 1", f"{src}: listing schemas")["nspname"].tolist()
    for role, s, tables in (("CDM", schema, omop.REQUIRED_TABLES), ("vocabulary", vocab, omop.VOCAB_TABLES)):
        if s not in schemas:
            present = [x for x in schemas if not x.startswith(("pg_", "information_schema"))]
            raise DataError(f"{src}: schema {s} (the {role} schema) does not exist in the database; expected the "
                            f"OMOP {role} tables {', '.join(tables)} there (schemas present: {', '.join(present) or 'none'})")
    cat = q.fetch_df(SQL_CATALOG, f"{src}: reading the catalog", ([schema, vocab],))
    found: dict[str, str] = {}
    for table in omop.SCHEMA:
        home = vocab if table in omop.VOCAB_TABLES else schema
        rel = cat[(cat["schema_name"] == home) & (cat["table_name"].str.lower() == table)]
        names = sorted(set(rel["table_name"]))
        if len(names) > 1:
            names = [n for n in names if n == table] or names
            if len(names) > 1:
                raise DataError(f"{src}: schema {home} holds several tables named {table} in different cases "
                                f"({', '.join(names)}); expected one")
        if not names:
            continue
        rel = rel[rel["table_name"] == names[0]]
        cols = {str(n).lower(): (str(n), str(t), bool(nn))
                for n, t, nn in zip(rel["column_name"], rel["column_type"], rel["not_null"]) if isinstance(n, str)}
        q.tables[table] = _check_table(q, home, names[0], table, cols)
        found[table] = f"{home}.{names[0]}"
    missing = [t for t in omop.REQUIRED_TABLES if t not in found]
    if missing:
        where = {t: (vocab if t in omop.VOCAB_TABLES else schema) for t in missing}
        present = sorted(set(cat.loc[cat["schema_name"] == schema, "table_name"]))
        raise DataError(f"{src}: missing table(s) {', '.join(f'{where[t]}.{t}' for t in missing)}; expected the OMOP "
                        f"CDM tables {', '.join(omop.REQUIRED_TABLES)} in schema {schema} "
                        f"(found there: {', '.join(present[:30]) or 'no table'})")
    for table in omop.NONEMPTY_TABLES:
        if table in found:
            empty = q.fetch_df(f"SELECT NOT EXISTS (SELECT 1 FROM {table}) AS empty", f"{src}: reading {found[table]}")
            if bool(empty["empty"][0]):
                raise DataError(f"{src}: table {found[table]} is empty (0 rows)")
    return found


def fingerprint(q: PgQuery) -> dict[str, list]:
    """{table: [rows, sum of 64-bit hashes of the typed rows]}: one scan per table, in SQL."""
    out = {}
    for table in sorted(q.tables):
        cols = ", ".join(c.name for c in omop.SCHEMA[table])
        r = q.fetch_df(f"SELECT count(*) AS n, coalesce(sum(hashtextextended(CAST(ROW({cols}) AS text), 0)), 0) AS h "
                       f"FROM {table}", f"{q.source}: fingerprinting {table}").iloc[0]
        out[table] = [int(r["n"]), str(r["h"])]
    return out


# ---------------------------------------------------------------- loading


def _options(src: PgSource, options: dict) -> dict:
    return with_defaults(omop.OPTIONS, {**src.options, **options}, "PostgreSQL source")


@contextmanager
def opened(src: PgSource) -> Iterator[tuple[PgSource, PgQuery, dict[str, str]]]:
    """(source, query function, {table: schema.table}) of a checked database; the connection closes after."""
    con = connect(src)
    try:
        q = PgQuery(con, str(src))
        tables = prepare(q, src)
        yield src, q, tables
    finally:
        con.close()


def _build(src: PgSource, q: PgQuery, tables: dict[str, str], opts: dict) -> Dataset:
    ds = omop.build_dataset(q, tables, str(src), **opts)
    ds.report["tables"] = dict(sorted(tables.items()))
    return ds


def load_pg(url: str | PgSource, **options) -> Dataset:
    """Read an OMOP CDM 5.3 PostgreSQL database into a Dataset; see the module docstring."""
    src = url if isinstance(url, PgSource) else parse_url(url)
    opts = _options(src, options)
    with opened(src) as (src, q, tables):
        return _build(src, q, tables, opts)


def cache_key(prints: dict, options: dict) -> str:
    """A key over the loader versions, the options and the tables' fingerprints."""
    payload = {"loader": [PG_LOADER_VERSION, omop.LOADER_VERSION], "options": options, "tables": prints}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:24]


def load_pg_cached(url: str | PgSource, cache_dir: str | Path, **options) -> Dataset:
    """`load_pg` cached under cache_dir/omop, keyed by the content fingerprint (see the module docstring)."""
    src = url if isinstance(url, PgSource) else parse_url(url)
    opts = _options(src, options)
    with opened(src) as (src, q, tables):
        # before the cache is touched
        omop.check_mapping(tables, opts["ingredient_mapping"], f"{src} (vocabulary schema {q.schemas[1]})")
        key = cache_key(fingerprint(q), opts)
        ds = cached(Path(cache_dir) / "omop", key, lambda: _build(src, q, tables, opts))
    ds.source = str(src)
    return ds


# ---------------------------------------------------------------- loading a folder into PostgreSQL (tests, benchmark)


def column_type(table: str, column: str) -> str:
    """The PostgreSQL type `copy_folder` gives a column: OMOP kinds for known columns, else by name, else text."""
    for c in omop.SCHEMA.get(table, ()):
        if c.name == column:
            return SQL_TYPE[c.kind] if c.name != "birth_datetime" else "timestamp"
    if column.endswith("_datetime"):
        return "timestamp"
    if column.endswith("_date"):
        return "date"
    return "text"


def copy_folder(con, folder: str | Path, schema: str, vocab_schema: str | None = None) -> dict[str, int]:
    """Create `schema` (and `vocab_schema`) and COPY every OMOP table file of `folder` into it; {table: rows}.

    con: a writable psycopg connection. Tables are replaced; columns typed by `column_type`.
    """
    vocab_schema = vocab_schema or schema
    counts = {}
    with con.cursor() as cur:
        for s in {schema, vocab_schema}:
            cur.execute(f"CREATE SCHEMA IF NOT EXISTS {ident(s)}")
        for table, path in omop.find_tables(folder).items():
            name = path.name.lower()
            if name.endswith(".parquet"):
                buf = io.BytesIO()
                pacsv.write_csv(pq.read_table(path), buf)
                buf.seek(0)
                f = buf
            else:
                f = (gzip.open if name.endswith(".gz") else open)(path, "rb")
            with f:
                header = f.readline().decode("utf-8-sig")
                names = [h.strip().lower() for h in next(csv.reader([header]))]
                home = ident(vocab_schema if table in omop.VOCAB_TABLES else schema) + "." + ident(table)
                cur.execute(f"DROP TABLE IF EXISTS {home}")
                cur.execute(f"CREATE TABLE {home} ({', '.join(f'{ident(n)} {column_type(table, n)}' for n in names)})")
                with cur.copy(f"COPY {home} ({', '.join(ident(n) for n in names)}) FROM STDIN WITH (FORMAT csv)") as cp:
                    while chunk := f.read(1 << 20):
                        cp.write(chunk)
            counts[table] = cur.rowcount
            cur.execute(f"ANALYZE {home}")
    con.commit()
    return counts
