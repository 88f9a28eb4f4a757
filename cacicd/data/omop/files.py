"""OMOP table files (CSV or Parquet) -> typed DuckDB tables: finding, checking and reading them."""
from __future__ import annotations

import csv
import gzip
import logging
import re
from collections.abc import Sequence
from pathlib import Path

import duckdb
from tqdm.auto import tqdm

from cacicd.data.omop.schema import CSV_DELIMITERS, NONEMPTY_TABLES, REQUIRED_TABLES, SCHEMA, SUFFIXES, Col, DataError
from cacicd.data.omop.sql import execute, ident, query, sql_str

log = logging.getLogger(__name__)


def find_tables(folder: str | Path, names: Sequence[str] | None = None) -> dict[str, Path]:
    """The table files of a folder (OMOP tables unless `names`), by lower-case table name."""
    names = set(SCHEMA if names is None else names)
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"OMOP folder {folder} does not exist or is not a folder")
    found: dict[str, list[Path]] = {}
    for p in sorted(folder.iterdir()):
        name = p.name.lower()
        for suf in SUFFIXES:
            if name.endswith(suf) and name[: -len(suf)] in names:
                found.setdefault(name[: -len(suf)], []).append(p)
    dupes = {t: ps for t, ps in found.items() if len(ps) > 1}
    if dupes:
        t, ps = next(iter(dupes.items()))
        raise DataError(f"{folder}: table {t} is given by several files ({', '.join(p.name for p in ps)}); keep one")
    return {t: ps[0] for t, ps in found.items()}


def _examples(con, sql: str, what: str) -> str:
    """The values of a query's first column, as a comma-separated list of reprs."""
    vals = query(con, sql, what).iloc[:, 0].tolist()
    return ", ".join(repr(v) for v in vals)


def register_file(con: duckdb.DuckDBPyConnection, path: Path, table: str, columns: Sequence[Col]) -> int:
    """Validate one table file and load it as the typed table `table`; returns its row count."""
    path = Path(path)
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file (table {table} needs a header and rows)")
    raw = f"_raw_{table}"
    if path.name.lower().endswith(".parquet"):
        execute(con, f"CREATE OR REPLACE TABLE {raw} AS SELECT * FROM read_parquet({sql_str(str(path))})",
                 f"{path}: cannot read table {table}")
    else:
        delim, names = csv_header(path)
        cols = "{" + ", ".join(f"{sql_str(n)}: 'VARCHAR'" for n in names) + "}"
        src = (f"read_csv({sql_str(str(path))}, header=true, auto_detect=false, columns={cols}, "
               f"""delim={sql_str(delim)}, quote='"', escape='"')""")
        try:
            con.execute(f"CREATE OR REPLACE TABLE {raw} AS SELECT * FROM {src}")
        except duckdb.Error as e:
            raise csv_error(path, table, str(e), delim) from None
    desc = query(con, f"DESCRIBE {raw}", f"{path}: cannot read the columns of table {table}")
    actual = {str(n).strip().lower(): (str(n), str(t).upper()) for n, t in zip(desc["column_name"], desc["column_type"])}
    n_rows = int(query(con, f"SELECT count(*) AS n FROM {raw}", f"{path}: cannot count rows").iloc[0, 0])
    missing = [c.name for c in columns if c.required and c.name not in actual]
    if missing:
        raise DataError(f"{path}: table {table} lacks column(s) {', '.join(missing)} "
                        f"(found: {', '.join(list(actual)[:30])})")
    selects = []
    for c in columns:
        if c.name not in actual:
            sqltype = {"int": "BIGINT", "date": "DATE", "datetime": "TIMESTAMP", "str": "VARCHAR"}[c.kind]
            selects.append(f"CAST(NULL AS {sqltype}) AS {c.name}")
            continue
        name, dtype = actual[c.name]
        expr, bad = _typed_expr(ident(name), dtype, c.kind, path, table, c.name)
        if bad is not None:
            n_bad = int(query(con, f"SELECT count(*) FROM {raw} WHERE {bad}", f"{path}: checking {c.name}").iloc[0, 0])
            if n_bad:
                ex = _examples(con, f"SELECT DISTINCT CAST({ident(name)} AS VARCHAR) FROM {raw} WHERE {bad} LIMIT 3",
                               f"{path}: examples of {c.name}")
                what = {"int": "not integers", "date": "not dates", "datetime": "not date-times"}[c.kind]
                raise DataError(f"{path}: column {c.name}: {n_bad} value(s) are {what} (e.g. {ex})")
        if c.not_null:
            n_null = int(query(con, f"SELECT count(*) FROM {raw} WHERE {ident(name)} IS NULL",
                               f"{path}: checking {c.name}").iloc[0, 0])
            if n_null:
                raise DataError(f"{path}: column {c.name}: {n_null} empty value(s) in a column that needs one in every row")
        selects.append(f"{expr} AS {c.name}")
    execute(con, f"CREATE OR REPLACE TABLE {table} AS SELECT {', '.join(selects)} FROM {raw}",
             f"{path}: cannot type table {table}")
    execute(con, f"DROP TABLE {raw}", f"{path}: cleaning up")
    return n_rows


def _open_bytes(path: Path):
    """The file opened for reading bytes, decompressed if it is .gz."""
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


def _not_utf8(path: Path, data: bytes, line: int, offset: int) -> DataError:
    """The error for a line of `path` that is not UTF-8 (`data`: that line, at byte `offset` of the file)."""
    try:
        data.decode("utf-8")
        return DataError(f"{path}: line {line} is not UTF-8")
    except UnicodeDecodeError as e:
        at, byte = offset + e.start, data[e.start]
    if data.startswith((b"\xff\xfe", b"\xfe\xff")) and line == 1:
        guess = "UTF-16 (it starts with a UTF-16 byte-order mark)"
    else:
        guess = "probably Latin-1 or Windows-1252"
    return DataError(f"{path}: line {line} (byte {at:,} of the file) holds byte 0x{byte:02x}, which is not UTF-8: "
                     f"the file's encoding is not UTF-8 ({guess}); convert it to UTF-8, "
                     "e.g. iconv -f WINDOWS-1252 -t UTF-8")


def csv_header(path: Path) -> tuple[str, list[str]]:
    """(delimiter, column names) of a CSV file, from its header line, once the file's ends are checked.

    The delimiter is the one of , tab ; | the header holds most. Refused with a DataError naming the
    file: a header that is not UTF-8, a compressed file that cannot be opened, and an uncompressed
    file that does not end with a line break (cut short).
    """
    try:
        with _open_bytes(path) as f:
            head = f.readline(1 << 20)
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read the file: {e}") from None
    try:
        text = head.decode("utf-8-sig").rstrip("\r\n")
    except UnicodeDecodeError:
        raise _not_utf8(path, head, 1, 0) from None
    if not path.name.lower().endswith(".gz"):
        with open(path, "rb") as f:
            f.seek(-1, 2)
            if f.read(1) != b"\n":
                f.seek(0)
                n = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 22), b"")) + 1
                raise DataError(f"{path}: the file does not end with a line break, so its last line (line {n:,}) "
                                "may be cut short (an interrupted copy or download?); copy it again, or, if it is "
                                "complete, add a line break at its end")
    counts = {d: text.count(d) for d in CSV_DELIMITERS}
    delim = max(CSV_DELIMITERS, key=lambda d: counts[d]) if max(counts.values()) else ","
    names = [n if n.strip() else f"column{i}" for i, n in enumerate(next(csv.reader([text], delimiter=delim)))]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise DataError(f"{path}: the header line names column(s) {', '.join(dupes)} more than once")
    return delim, names


def csv_error(path: Path, table: str, error: str, delim: str) -> DataError:
    """A DuckDB error reading a CSV file as a DataError naming file, line and cause (not the line's content)."""
    first = error.strip().splitlines()[0] if error.strip() else error
    if "not utf-8 encoded" in error.lower() or "invalid unicode" in error.lower():
        with _open_bytes(path) as f:
            offset = 0
            for i, data in enumerate(f, start=1):
                try:
                    data.decode("utf-8")
                except UnicodeDecodeError:
                    return _not_utf8(path, data, i, offset)
                offset += len(data)
        return DataError(f"{path}: the file is not UTF-8 ({first})")
    if "gzip" in error.lower():
        return DataError(f"{path}: the compressed file is damaged or cut short ({first}); copy it again")
    m = re.search(r"CSV Error on Line: (\d+)", error)
    if not m:
        return DataError(f"{path}: cannot read table {table}: {first}")
    cols = re.search(r"Expected Number of Columns: (\d+) Found: (\d+)", error)
    if cols:
        why = f"{cols.group(2)} field(s) where the header has {cols.group(1)}"
    elif "unterminated quote" in error.lower():
        why = "a quoted value is not closed"
    else:
        why = next((ln.strip() for ln in error.splitlines()[2:] if ln.strip()), first)
    sep = {",": "comma", "\t": "tab", ";": "semicolon", "|": "pipe"}[delim]
    return DataError(f"{path}: line {m.group(1)}: {why} ({sep}-separated, as read from the header); "
                     "the file is damaged or cut short: fix that line or copy the file again")


def _typed_expr(col: str, dtype: str, kind: str, path: Path, table: str, name: str) -> tuple[str, str | None]:
    """(SQL expression of the typed column, SQL condition of a bad value or None)."""
    ints = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT")
    if kind == "str":
        return f"CAST({col} AS VARCHAR)", None
    if kind == "int":
        if dtype in ints:
            return f"CAST({col} AS BIGINT)", None
        if dtype in ("FLOAT", "DOUBLE") or dtype.startswith("DECIMAL"):
            return f"CAST({col} AS BIGINT)", f"{col} IS NOT NULL AND ({col} <> trunc({col}) OR abs({col}) > 9.2e18)"
        if dtype == "VARCHAR":
            return (f"CAST(trim({col}) AS BIGINT)",
                    f"{col} IS NOT NULL AND (NOT regexp_full_match(trim({col}), '[+-]?[0-9]{{1,19}}') "
                    f"OR TRY_CAST(trim({col}) AS BIGINT) IS NULL)")
        raise DataError(f"{path}: column {name} of table {table} has type {dtype}, expected integers")
    if kind in ("date", "datetime"):
        out = "DATE" if kind == "date" else "TIMESTAMP"
        if dtype.startswith(("DATE", "TIMESTAMP")):
            return f"CAST({col} AS {out})", None
        if dtype == "VARCHAR":
            parsed = f"coalesce(TRY_CAST(trim({col}) AS TIMESTAMP), CAST(TRY_CAST(trim({col}) AS DATE) AS TIMESTAMP))"
            return f"CAST({parsed} AS {out})", f"{col} IS NOT NULL AND trim({col}) <> '' AND {parsed} IS NULL"
        raise DataError(f"{path}: column {name} of table {table} has type {dtype}, expected dates")
    raise ValueError(kind)


def register_folder(con: duckdb.DuckDBPyConnection, folder: str | Path) -> dict[str, Path]:
    """Load every OMOP table file of `folder` as a typed table; returns {table: file}."""
    files = find_tables(folder)
    missing = [t for t in REQUIRED_TABLES if t not in files]
    if missing:
        raise DataError(f"{folder}: missing table(s) {', '.join(missing)} "
                        f"(looked for <table>{'|'.join(SUFFIXES)}; found {', '.join(sorted(files)) or 'none'})")
    big = sum(p.stat().st_size for p in files.values()) > 50e6
    for table, path in tqdm(files.items(), desc="reading OMOP tables", disable=not big, leave=False):
        n = register_file(con, path, table, SCHEMA[table])
        if n == 0 and table in NONEMPTY_TABLES:
            raise DataError(f"{path}: table {table} is empty (0 rows)")
        log.debug("%s: %d rows", path, n)
    return files
