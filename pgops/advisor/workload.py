"""Workload sources: pg_stat_statements, a file of SQL statements, and the server log.

The log matters because pg_stat_statements records only statements that finish: one cancelled by
statement_timeout, the slowest kind, shows up only in the log (`ERROR: canceling statement due to statement
timeout` followed by `STATEMENT: ...`).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg

from pgops import pg_stat_statements
from pgops.advisor.model import Origin, Statement
from pgops.config import INT4_MAX, Settings, Target
from pgops.db import ConnectOptions, connect
from pgops.errors import PgopsError
from pgops.resources import read_sql


@dataclass
class LeftOut:
    """Statements of the workload the filters left out: called too rarely, too light, or past --top."""

    rare: int = 0
    light: int = 0
    past_top: int = 0


@dataclass(frozen=True)
class StatementFilter:
    """Which of pg_stat_statements' statements the advisor reads: called often enough, heavy enough, the `top`
    heaviest, of one user when given."""

    min_calls: int = 1
    min_total_time_ms: float = 0.0
    top: int = 500
    user: str | None = None


def read_pg_stat_statements(
    conn: psycopg.Connection, keep: StatementFilter = StatementFilter(), left_out: LeftOut | None = None
) -> list[Statement]:
    """The current database's statements, heaviest total time first; `left_out` is filled with what the
    filters leave out, so the advice can say which option brings them in."""
    extension = pg_stat_statements.locate(conn, otherwise="or pass --from-file/--from-log")
    params = {"min_calls": keep.min_calls, "min_total_time": keep.min_total_time_ms, "top": keep.top, "user": keep.user}
    with pg_stat_statements.readable():
        rows = conn.execute(pg_stat_statements.query("advisor/pg_stat_statements.sql", extension), params).fetchall()
    if left_out is not None and rows:
        left_out.rare, left_out.light, left_out.past_top = rows[0][0], rows[0][1], rows[0][2]
    return [
        Statement(
            query=text or "",
            calls=calls,
            total_time_ms=float(total_time),
            rows=rows_,
            shared_blks_hit=hit,
            shared_blks_read=read,
            source="pg_stat_statements",
            queryid=queryid,
        )
        for _, _, _, queryid, text, calls, total_time, rows_, hit, read in rows
        if calls is not None  # the one row of counts alone, when no statement is kept (queryid is hidden from some)
    ]


def read_merged(
    targets: Sequence[Target], settings: Settings, rule: StatementFilter, left_out: LeftOut | None = None
) -> list[Statement]:
    """pg_stat_statements of each target (one database of one cluster: a primary and its standbys), merged:
    a statement that ran on several is one, its calls and time summed, so each server weighs it by its time
    there. The filters apply to the sums, after the merge."""
    per_target = []
    every = StatementFilter(min_calls=0, min_total_time_ms=0.0, top=INT4_MAX, user=rule.user)
    for target in targets:
        with connect(
            target.url, settings.database, ConnectOptions(statement_timeout=settings.advisor.statement_timeout)
        ) as conn:
            per_target.append((target.name, read_pg_stat_statements(conn, every)))
    return keep(merge(per_target), rule, left_out)


def merge(per_target: Sequence[tuple[str, Sequence[Statement]]]) -> list[Statement]:
    """One statement per query across servers (the same queryid and text: a standby plans with the primary's
    catalog, so its queryids are the primary's), with each server's calls and time in `origins`."""
    merged: dict[tuple[int | None, str], Statement] = {}
    for name, statements in per_target:
        for statement in statements:
            key = (statement.queryid, _WHITESPACE.sub(" ", statement.query).strip())
            origin = Origin(name, statement.calls, statement.total_time_ms)
            old = merged.get(key)
            if old is None:
                merged[key] = dataclasses.replace(statement, origins=(origin,))
                continue
            origins = {o.target: o for o in old.origins}
            if name in origins:  # another role's row of the same statement on the same server
                mine = origins[name]
                origin = Origin(name, mine.calls + origin.calls, mine.total_time_ms + origin.total_time_ms)
            origins[name] = origin
            merged[key] = dataclasses.replace(
                old,
                calls=old.calls + statement.calls,
                total_time_ms=old.total_time_ms + statement.total_time_ms,
                rows=old.rows + statement.rows,
                shared_blks_hit=old.shared_blks_hit + statement.shared_blks_hit,
                shared_blks_read=old.shared_blks_read + statement.shared_blks_read,
                origins=tuple(origins.values()),
            )
    return sorted(merged.values(), key=lambda s: -s.total_time_ms)


def keep(statements: Sequence[Statement], rule: StatementFilter, left_out: LeftOut | None = None) -> list[Statement]:
    """The filters of sql/advisor/pg_stat_statements.sql, on statements already read (heaviest first)."""
    min_calls, min_total_time_ms, top = rule.min_calls, rule.min_total_time_ms, rule.top
    rare = [s for s in statements if s.calls < min_calls]
    light = [s for s in statements if s.calls >= min_calls and s.total_time_ms < min_total_time_ms]
    passing = [s for s in statements if s.calls >= min_calls and s.total_time_ms >= min_total_time_ms]
    if left_out is not None:
        left_out.rare, left_out.light, left_out.past_top = len(rare), len(light), max(len(passing) - top, 0)
    return passing[:top]


# What split_statements must look at: quotes, comments, dollar quotes and semicolons; it jumps between them.
_SPLIT_TOKEN = re.compile(r"""['";$]|--|/\*""")
_DOLLAR_TAG = re.compile(r"\$[A-Za-z_]?[A-Za-z0-9_]*\$")
_COMMENT = re.compile(r"--[^\n]*|/\*.*?(?:\*/|\Z)", re.DOTALL)  # an unterminated /* runs to the end, as split reads it
_WHITESPACE = re.compile(r"\s+")


def split_statements(text: str) -> list[str]:
    """Split SQL text on top-level semicolons, respecting quotes, dollar quotes and comments."""
    statements: list[str] = []
    start = i = 0
    n = len(text)
    while token := _SPLIT_TOKEN.search(text, i):
        i = token.start()
        ch = token[0]
        if ch == "'" or ch == '"':
            end = text.find(ch, i + 1)
            while end != -1 and end + 1 < n and text[end + 1] == ch:  # doubled quote inside
                end = text.find(ch, end + 2)
            i = n if end == -1 else end + 1
        elif ch == "--":
            end = text.find("\n", i)
            i = n if end == -1 else end + 1
        elif ch == "/*":
            end = text.find("*/", i + 2)
            i = n if end == -1 else end + 2
        elif ch == "$" and (tag := _DOLLAR_TAG.match(text, i)):
            end = text.find(tag[0], i + len(tag[0]))
            i = n if end == -1 else end + len(tag[0])
        elif ch == ";":
            statements.append(text[start:i])
            i += 1
            start = i
        else:
            i += 1
    statements.append(text[start:])
    return [s.strip() for s in statements if _has_code(s)]


def _has_code(statement: str) -> bool:
    return bool(_COMMENT.sub("", statement).strip())


# A statements file or log is held in memory and every statement in it parsed: at most this much is read, so a
# wrong path (a binary, /dev/zero, a year of logs) ends in one line instead of gigabytes and minutes.
MAX_INPUT_BYTES = 32 * 1024 * 1024
_CHUNK_BYTES = 1024 * 1024


def _read_text(path: Path, what: str, *, strict: bool) -> str:
    """The text of a file of at most MAX_INPUT_BYTES, read a chunk at a time; a NUL byte (binary data) is refused
    as soon as it is read. `strict`: bytes that are not UTF-8 are refused too, else replaced with U+FFFD."""
    chunks: list[bytes] = []
    size = 0
    try:
        with path.open("rb") as file:
            while chunk := file.read(_CHUNK_BYTES):
                if (nul := chunk.find(b"\0")) != -1:
                    raise PgopsError(f"{path}: binary data (a NUL byte at offset {size + nul:,}), not a {what}")
                size += len(chunk)
                if size > MAX_INPUT_BYTES:
                    raise PgopsError(
                        f"{path}: over {MAX_INPUT_BYTES // 2**20} MiB, the most pgops reads of a {what}: "
                        "pass the part you need (e.g. the output of tail -c)"
                    )
                chunks.append(chunk)
    except OSError as exc:
        raise PgopsError(f"{path}: can't read the {what}: {exc.strerror}") from None
    data = b"".join(chunks)
    try:
        text = data.decode("utf-8", errors="strict" if strict else "replace")
    except UnicodeDecodeError as exc:
        raise PgopsError(
            f"{path}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start:,}): convert the {what} "
            "(e.g. iconv -f LATIN1 -t UTF-8)"
        ) from None
    return text.removeprefix("\ufeff")  # a byte order mark is no part of the first statement


def read_file(path: Path) -> list[Statement]:
    """Statements from a SQL file of UTF-8 text; identical statements are counted as calls of one."""
    text = _read_text(path, "statements file", strict=True)
    return _aggregate((statement, 0.0, False) for statement in split_statements(text))


# `... LOG:  duration: 1234.567 ms  statement: SELECT ...` (simple protocol) and, over the extended protocol,
# `parse <name>: ...`, `bind <name>[/portal]: ...`, `execute <name>[/portal]: ...` and `execute fetch from ...`.
_LEVEL = re.compile(r"\b(LOG|ERROR|DETAIL|STATEMENT|HINT|CONTEXT|WARNING|FATAL|PANIC|NOTICE|INFO|DEBUG\d?):\s\s")
_DURATION = re.compile(
    r"duration: ([\d.]+) ms\s+(statement|execute fetch from|execute|bind|parse)\b[^:]*:\s(.*)", re.DOTALL
)
_PID = re.compile(r"\[(\d+)\]")  # the default log_line_prefix, '%m [%p] ', names the backend's process id
_PARAMETERS = re.compile(r"parameters: (.*)", re.DOTALL | re.IGNORECASE)  # "Parameters:" on 18
_ONE_PARAMETER = re.compile(r"\$(\d+) = (NULL|'(?:[^']|'')*')")


@dataclass(frozen=True)
class LogEntry:
    """One server message, whatever the log format: severity, message, DETAIL, the statement, the database."""

    severity: str
    message: str
    detail: str = ""
    statement: str = ""
    database: str | None = None
    pid: str | None = None  # the backend's process id, when the log names it


def read_log(path: Path, database: str | None = None, cancel_after_ms: float = 0.0) -> list[Statement]:
    """Slow and cancelled statements from a PostgreSQL log: stderr format, csvlog (`.csv`) or jsonlog.

    Statements logged by `log_min_duration_statement` keep their duration; `execute` entries get their
    logged parameter values substituted. Only executions are calls: `statement:` (simple protocol) and
    `execute` entries. The extended protocol also logs its `parse` and `bind` steps, each with its duration
    (an unnamed statement is planned at bind): that time is added to the next execution of the same text by
    the same backend, and left out when none is logged (it ran under log_min_duration_statement). An `execute
    fetch from` goes on with its portal's execution: its time is added to that execution.

    A statement cancelled by statement_timeout ran at least that long: it counts `cancel_after_ms` (the timeout
    the database's sessions get), or the longest duration the log shows when that is longer. csvlog and jsonlog
    name each entry's database: entries of other databases than `database` are left out. Bytes that are not
    UTF-8 (a database in another encoding) become U+FFFD; a log over MAX_INPUT_BYTES or with a NUL byte is
    refused.
    """
    text = _read_text(path, "log file", strict=False)
    if text.lstrip().startswith("{"):
        entries = _json_entries(text)
    elif path.suffix == ".csv":
        entries = _csv_entries(text)
    else:
        entries = _stderr_entries(text.splitlines())
    found: list[tuple[str, float, bool]] = []
    pending: dict[tuple[str | None, str | None, str], float] = {}  # parse and bind time awaiting its execution
    latest: dict[tuple[str | None, str | None, str], int] = {}  # each statement's latest execution in `found`
    cancelled: list[str] = []
    for entry in entries:
        if database and entry.database and entry.database != database:
            continue
        if entry.severity == "LOG" and (match := _DURATION.match(entry.message)):
            duration, step, logged = float(match[1]), match[2], match[3]
            key = (entry.database, entry.pid, logged)
            if step in ("parse", "bind"):
                pending[key] = pending.get(key, 0.0) + duration
            elif step == "execute fetch from" and key in latest:
                statement, so_far, _ = found[latest[key]]
                found[latest[key]] = (statement, so_far + duration, False)
            else:
                statement = logged
                if params := _PARAMETERS.match(entry.detail):
                    statement = _substitute(statement, params[1])
                latest[key] = len(found)
                found.append((statement, duration + pending.pop(key, 0.0), False))
        elif entry.severity == "ERROR" and "due to statement timeout" in entry.message and entry.statement:
            cancelled.append(entry.statement)
    longest = max([cancel_after_ms, *(duration for _, duration, _ in found)])
    found += [(statement, longest, True) for statement in cancelled]
    return _aggregate(found, source="log")


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "min": 60_000.0, "h": 3_600_000.0, "d": 86_400_000.0}


def timeout_ms(text: str | None) -> float:
    """A statement_timeout as configured (`30s`, `'5min'`, `30000`: ms without a unit) in ms; 0 when unreadable."""
    match = re.fullmatch(r"\s*'?\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*'?\s*", text or "", re.IGNORECASE)
    if not match or match[2].lower() not in {"", *_UNITS_MS}:
        return 0.0
    return float(match[1]) * _UNITS_MS.get(match[2].lower(), 1.0)


def read_statement_timeout(conn: psycopg.Connection) -> float:
    """The statement_timeout the current database's sessions get, in ms (0: none, or not readable)."""
    try:
        row = conn.execute(read_sql("advisor/statement_timeout.sql")).fetchone()
    except psycopg.Error:
        return 0.0
    return timeout_ms(row[0] if row else None)


def _stderr_entries(lines: list[str]) -> list[LogEntry]:
    """Messages with their DETAIL and STATEMENT lines attached; lines without a level marker continue the
    previous message."""
    messages: list[tuple[str, str | None, list[str]]] = []  # lines joined at the end, not one by one: quadratic
    for line in lines:
        match = _LEVEL.search(line)
        if match:
            pid = _PID.search(line, 0, match.start())
            messages.append((match[1], pid[1] if pid else None, [line[match.end() :]]))
        elif messages:
            messages[-1][2].append(line.lstrip("\t"))
    entries: list[LogEntry] = []
    for level, pid, parts in messages:
        text = "\n".join(parts)
        if level in ("DETAIL", "STATEMENT") and entries:
            field_name = "detail" if level == "DETAIL" else "statement"
            entries[-1] = dataclasses.replace(entries[-1], **{field_name: text})
        else:
            entries.append(LogEntry(level, text, pid=pid))
    return entries


def _json_entries(text: str) -> list[LogEntry]:
    entries = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            entries.append(
                LogEntry(
                    str(record.get("error_severity", "")),
                    str(record.get("message", "")),
                    str(record.get("detail", "")),
                    str(record.get("statement", "")),
                    record.get("dbname"),
                    str(record["pid"]) if "pid" in record else None,
                )
            )
    return entries


# csvlog columns (PostgreSQL 13+): database_name 2, process_id 3, error_severity 11, message 13, detail 14, query 19.
def _csv_entries(text: str) -> list[LogEntry]:
    # The csv module refuses a field over 128 kB by default; a longer statement is read, and skipped as too large.
    csv.field_size_limit(max(csv.field_size_limit(), MAX_INPUT_BYTES))
    return [
        LogEntry(row[11], row[13], row[14], row[19], row[2] or None, row[3] or None)
        for row in csv.reader(io.StringIO(text))
        if len(row) > 19
    ]


def _substitute(text: str, parameters: str) -> str:
    values = {int(n): value for n, value in _ONE_PARAMETER.findall(parameters)}
    return re.sub(r"\$(\d+)\b", lambda m: values.get(int(m[1]), m[0]), text)


def _aggregate(entries: Iterable[tuple[str, float, bool]], source: str = "file") -> list[Statement]:
    """One Statement per distinct text (whitespace-insensitive), with its calls and total time."""
    merged: dict[str, Statement] = {}
    for text, duration, was_cancelled in entries:
        key = _WHITESPACE.sub(" ", text).strip().rstrip(";")  # not " ".join(text.split()): a list per word
        old = merged.get(key)
        merged[key] = Statement(
            query=old.query if old else text.strip().rstrip(";"),
            calls=(old.calls if old else 0) + 1,
            total_time_ms=(old.total_time_ms if old else 0.0) + duration,
            source=source,
            cancelled=was_cancelled or bool(old and old.cancelled),
        )
    return list(merged.values())
