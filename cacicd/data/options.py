"""Loader options as a source string writes them (`?name=value&...`), and the options of every source."""
from __future__ import annotations

from cacicd.data.omop.schema import DataError

FLAGS = ("allow_no_icd9", "allow_no_drugs")  # true/false options of `load_data` itself, for every source
OWN_OPTIONS = ("age_encoding",) + FLAGS  # options `load_data` reads itself, whatever the source


def parse_value(v: str) -> int | list[int] | str | None:
    """An option's value: "none" -> None, an integer or comma-separated integers -> int or list, else the text."""
    if v.lower() == "none":
        return None
    try:
        parts = [int(x) for x in v.split(",")]
    except ValueError:
        return v
    return parts[0] if len(parts) == 1 else parts


def parse_flag(name: str, value) -> bool:
    """A true/false option's value (true, false, yes, no, 1, 0); DataError otherwise."""
    if value in (True, False, 0, 1) or str(value).lower() in ("true", "false", "yes", "no"):
        return value in (True, 1) or str(value).lower() in ("true", "yes")
    raise DataError(f"data source option {name}={value!r}: expected true or false")
