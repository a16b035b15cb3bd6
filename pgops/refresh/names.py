"""A view name from the command line, `[schema.]name`, read the way PostgreSQL reads a qualified name, and looked
up without ever putting the user's text into SQL: the parts are quoted as identifiers and passed as a parameter to
`to_regclass`, which returns NULL (never an error) for a well-formed name that does not exist."""

from __future__ import annotations

import re
from dataclasses import dataclass

import psycopg
from psycopg import sql

from pgops.errors import PgopsError

MAX_NAME = 1000  # far more than two 63-byte identifiers, quoted


@dataclass(frozen=True)
class ViewName:
    schema: str | None
    name: str

    @property
    def parts(self) -> tuple[str, ...]:
        return (self.name,) if self.schema is None else (self.schema, self.name)

    @property
    def quoted(self) -> str:
        """`"schema"."name"`: safe as text for `to_regclass`, `parse_ident` and `::regclass`."""
        return sql.SQL(".").join(sql.Identifier(p) for p in self.parts).as_string(None)

    def __str__(self) -> str:
        return ".".join(_shown(p) for p in self.parts)


@dataclass(frozen=True)
class Relation:
    oid: int
    schema: str
    name: str

    def __str__(self) -> str:
        return f"{_shown(self.schema)}.{_shown(self.name)}"


def _shown(part: str) -> str:
    """A name part for a one-line message: bare when PostgreSQL would read it back unquoted, else quoted, with
    control characters escaped so a name can't break the line."""
    if re.fullmatch(r"[a-z_][a-z0-9_$]*", part):
        return part
    quoted = '"' + part.replace('"', '""') + '"'
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode() for ch in quoted)


def parse_view_name(text: str | ViewName) -> ViewName:
    """`name`, `schema.name`, with `"..."` quoting (`""` for a quote) and unquoted parts folded to lower case,
    as PostgreSQL does; anything else (three parts, stray characters, an empty part) is a one-line error."""
    if isinstance(text, ViewName):
        return text
    parsed = _parse(text)
    if isinstance(parsed, str):
        raise PgopsError(
            f'{_repr(text)} is not a view name: {parsed} (expected VIEW or SCHEMA.VIEW; quote a name with "...")'
        )
    return parsed


_QUOTED = re.compile(r'"((?:[^"]|"")*)"')
_BARE = re.compile(r"[A-Za-z_\u0080-\U0010ffff][A-Za-z0-9_$\u0080-\U0010ffff]*")
_SPACE = re.compile(r"[ \t\n\r\f\v]*")


def _parse(text: str) -> ViewName | str:
    if len(text) > MAX_NAME:
        return f"longer than {MAX_NAME} characters"
    if "\0" in text:
        return "it contains a NUL character"
    parts: list[str] = []
    pos = _SPACE.match(text).end()
    while True:
        if text.startswith('"', pos):
            quoted = _QUOTED.match(text, pos)
            if not quoted:
                return "a quoted name is not closed"
            if not quoted[1]:
                return "a quoted name is empty"
            parts.append(quoted[1].replace('""', '"'))
            pos = quoted.end()
        else:
            bare = _BARE.match(text, pos)
            if not bare:
                return "a name part is empty or starts with a character a name can't start with"
            parts.append(re.sub(r"[A-Z]+", lambda m: m[0].lower(), bare[0]))  # PostgreSQL folds ASCII letters only
            pos = bare.end()
        pos = _SPACE.match(text, pos).end()
        if pos == len(text):
            break
        if text[pos] != ".":
            return f"unexpected {_repr(text[pos])}"
        pos = _SPACE.match(text, pos + 1).end()
    if len(parts) > 2:
        return f"{len(parts)} dotted parts"
    return ViewName(None, parts[0]) if len(parts) == 1 else ViewName(parts[0], parts[1])


def _repr(text: str) -> str:
    shown = repr(text)
    return shown if len(shown) <= 80 else shown[:77] + "..."


def resolve(conn: psycopg.Connection, view: ViewName | str) -> Relation | None:
    """The relation the name means here (search_path for a bare name), or None when there is none."""
    name = parse_view_name(view)
    try:
        with conn.transaction():  # a savepoint when the caller is in a transaction
            row = conn.execute(
                "SELECT c.oid, n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.oid = to_regclass(%s)",
                (name.quoted,),
            ).fetchone()
    except psycopg.errors.InsufficientPrivilege as exc:  # no USAGE on the schema
        raise PgopsError(f"can't look up {name}: {exc.diag.message_primary}") from None
    return Relation(*row) if row else None


def require(conn: psycopg.Connection, view: ViewName | str) -> Relation:
    name = parse_view_name(view)
    relation = resolve(conn, name)
    if relation is None:
        raise PgopsError(f"{name} does not exist")
    return relation
