"""Where the files shared by migrations and code live: `sql/` and `migrations/` at the top of a source
checkout, or inside the package (`pgops/_data/`) once installed from a wheel."""

from __future__ import annotations

from functools import cache
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


@cache
def data_root() -> Path:
    bundled = _PACKAGE / "_data"
    return bundled if (bundled / "sql").is_dir() else _PACKAGE.parent


def sql_path(name: str) -> Path:
    return data_root() / "sql" / name


# Leads every statement pgops sends from its own files: pg_stat_statements keeps a leading comment, so the
# advisor can leave pgops' own statements out of the workload it reads.
MARK = "/* pgops */ "


def read_sql(name: str) -> str:
    """The text of `sql/<name>`, the one copy that migrations and code both run, marked as pgops' own."""
    return MARK + sql_path(name).read_text()


def migrations_dir() -> Path:
    return data_root() / "migrations"


def read_sql_part(name: str) -> str:
    """The text of `sql/<name>`, a part composed into a marked statement (so it carries no mark of its own)."""
    return sql_path(name).read_text()
