"""Workload input through the CLI against a real PostgreSQL: statements over the size limits, files pgops can't
read, and server logs of every format."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from pgops import db
from pgops.advisor import workload
from pgops.advisor.model import SKIP_TOO_LARGE, Skipped
from pgops.advisor.parse import analyze
from pgops.advisor.workload import read_file, read_log, read_statement_timeout
from pgops.errors import PgopsError
from pgops.sandbox import Sandbox, find_bindir
from tests.advisor.helpers import demo_catalog


def test_a_too_large_statement_is_listed_by_explain_and_counted_in_the_summary(dsn, conn, cli, tmp_path):
    conn.execute("CREATE TABLE items (id int PRIMARY KEY, owner int)")
    big = "SELECT id FROM items WHERE owner IN (" + ", ".join(str(n) for n in range(20_000)) + ")"
    assert len(big) > 100_000  # parse.MAX_STATEMENT_CHARS
    workload = tmp_path / "workload.sql"
    # the subscript makes sqlglot log at INFO: that line must not reach stderr
    workload.write_text(f"{big};\nSELECT (array_agg(id))[1] FROM items WHERE owner = 2;\n")
    result = cli("--dsn", dsn, "advise-indexes", "--from-file", workload, "--explain", "--no-hypopg")
    assert result.exit_code in (0, 1), result.stderr
    assert "sqlglot" not in result.stderr and "array index" not in result.stderr
    reason = f"too large to analyze: {len(big):,} characters, over the limit of 100,000"
    assert f"--   {reason}: SELECT id FROM items WHERE owner IN (0, 1, 2," in result.stdout
    summary = result.stdout.splitlines()[-1]
    assert summary.startswith("-- summary: 2 statements read, 1 analyzed, 1 skipped (1 too large to analyze)")

    as_json = cli("--dsn", dsn, "advise-indexes", "--from-file", workload, "--format", "json", "--no-hypopg")
    skipped = json.loads(as_json.stdout)["skipped"]
    assert [(s["reason"], len(s["query"])) for s in skipped] == [("too large to analyze", 1001)]


def _refusal(reader, path: Path) -> str:
    with pytest.raises(PgopsError) as refused:
        reader(path)
    message = str(refused.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    return message


def test_binary_input_is_refused_at_its_first_nul_byte(tmp_path):
    binary = tmp_path / "dump.bin"
    binary.write_bytes(b"SELECT 1;\n" + bytes(range(256)) * 4)
    assert "binary data (a NUL byte at offset 10), not a statements file" in _refusal(read_file, binary)
    assert "binary data (a NUL byte at offset 10), not a log file" in _refusal(read_log, binary)
    # endless: refused at the first chunk, not after gigabytes
    assert "a NUL byte at offset 0" in _refusal(read_file, Path("/dev/zero"))
    assert "a NUL byte at offset 0" in _refusal(read_log, Path("/dev/zero"))


def test_a_statements_file_that_is_not_utf8_is_refused_naming_the_byte(tmp_path):
    latin1 = tmp_path / "latin1.sql"
    latin1.write_bytes("SELECT id FROM customers WHERE name = 'Jos\u00e9';\n".encode("latin-1"))
    message = _refusal(read_file, latin1)
    assert "not UTF-8 text (byte 0xe9 at offset 42)" in message and "iconv -f LATIN1 -t UTF-8" in message
    # a log may hold several databases' encodings: it is read, with U+FFFD for what is not UTF-8
    log = tmp_path / "postgresql.log"
    log.write_bytes(b"2026-11-23 10:00:00 UTC [1] LOG:  duration: 5.0 ms  statement: SELECT 'Jos\xe9' FROM t\n")
    assert [s.query for s in read_log(log)] == ["SELECT 'Jos\ufffd' FROM t"]
    with_bom = tmp_path / "bom.sql"
    with_bom.write_bytes("\ufeffSELECT 1;".encode())
    assert [s.query for s in read_file(with_bom)] == ["SELECT 1"]


def test_input_over_the_size_limit_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(workload, "MAX_INPUT_BYTES", 4096)
    monkeypatch.setattr(workload, "_CHUNK_BYTES", 1000)
    statements = tmp_path / "workload.sql"
    statements.write_text("SELECT 1;".ljust(4096))
    assert [s.query for s in read_file(statements)] == ["SELECT 1"]  # at the limit: read
    statements.write_text("SELECT 1;".ljust(4097))
    assert "over 0 MiB, the most pgops reads of a statements file" in _refusal(read_file, statements)
    assert "the most pgops reads of a log file" in _refusal(read_log, statements)


def test_a_csvlog_statement_over_128_kb_is_read_and_skipped_as_too_large(tmp_path):
    big = "SELECT id FROM orders WHERE customer_id IN (" + ", ".join(map(str, range(30_000))) + ")"
    row = ["2026-11-23 10:00:00 UTC", "app", "app", "1", "", "s", "1", "SELECT", "", "", "0", "LOG", "00000"]
    row += [f"duration: 9.5 ms  statement: {big}", "", "", "", "", "", "", "", "", "app", "client backend", "", "0"]
    buffer = io.StringIO()
    csv.writer(buffer).writerow(row)
    log = tmp_path / "postgresql.csv"
    log.write_text(buffer.getvalue())
    [statement] = read_log(log, "app")
    assert statement.query == big and statement.total_time_ms == 9.5
    skipped = analyze(statement, demo_catalog())
    assert isinstance(skipped, Skipped) and skipped.reason == SKIP_TOO_LARGE


def test_unreadable_statements_files_end_in_one_line_and_exit_3(dsn, cli, tmp_path):
    binary = tmp_path / "dump.bin"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    latin1 = tmp_path / "latin1.sql"
    latin1.write_bytes("SELECT 'Jos\u00e9';".encode("latin-1"))
    for path, reason in [(binary, "binary data (a NUL byte at offset 8)"), (latin1, "byte 0xe9 at offset 11")]:
        result = cli("--dsn", dsn, "advise-indexes", "--from-file", path)
        assert result.exit_code == 3, result.stderr
        assert result.stderr.startswith(f"pgops: error: {path}: ") and reason in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def logging_server() -> Iterator[tuple[str, Path]]:
    """A cluster of this module's own that logs every statement's duration in the three formats at once (the
    logging collector, which csvlog and jsonlog need, starts only with the server): its URL and log folder."""
    try:
        find_bindir()
    except PgopsError as exc:
        pytest.skip(str(exc))
    folder = Path(tempfile.mkdtemp(prefix="pgops-logbox-"))  # under /tmp: the postgres user can reach it
    box = Sandbox(folder)
    try:
        url = box.start()
        with psycopg.connect(url, autocommit=True) as conn:
            for setting, value in {
                "logging_collector": "on",
                "log_destination": "stderr,csvlog,jsonlog",
                "log_filename": "postgresql.log",  # and postgresql.csv, postgresql.json
                "log_rotation_age": "0",
                "log_rotation_size": "0",
            }.items():
                conn.execute(f"ALTER SYSTEM SET {setting} = '{value}'")
            conn.execute("CREATE DATABASE app")
        box.stop()
        url = box.start()
        yield make_conninfo(url, dbname="app"), box.data / "log"
    finally:
        with contextlib.suppress(PgopsError):
            box.stop()
        shutil.rmtree(folder, ignore_errors=True)


_DURATION_OF = re.compile(r"duration: ([\d.]+) ms  (?:parse|bind|execute)[^:]*: (.*)", re.DOTALL)


def test_from_log_counts_executions_not_parse_and_bind_steps(logging_server):
    """5 executions over the extended protocol, unnamed and prepared, and 5 over the simple protocol, are 5 calls
    each in every log format; the parse and bind time goes to the executions."""
    dsn, folder = logging_server
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY, owner int)")
        conn.execute("INSERT INTO items SELECT n, n % 10 FROM generate_series(1, 100) n")
        conn.execute("SET log_min_duration_statement = 0")
        for _ in range(5):
            conn.execute("SELECT id FROM items WHERE owner = %s", (7,), prepare=False)  # parse, bind, execute
            conn.execute("SELECT owner FROM items WHERE id = %s", (7,), prepare=True)  # parse once, bind, execute
            psycopg.ClientCursor(conn).execute("SELECT id, owner FROM items WHERE owner < %s", (3,))  # statement:
        conn.execute("SELECT 'end of the workload'")
    files = {name: folder / f"postgresql.{name}" for name in ("log", "csv", "json")}
    deadline = time.monotonic() + 60
    while not all(p.exists() and "end of the workload" in p.read_text(errors="replace") for p in files.values()):
        assert time.monotonic() < deadline, "the logging collector wrote no entry for the end of the workload"
        time.sleep(0.05)

    logged: dict[str, float] = {}  # each extended-protocol statement's parse, bind and execute time, from the log
    for line in files["json"].read_text().splitlines():
        record = json.loads(line)
        if record.get("dbname") == "app" and (match := _DURATION_OF.match(record.get("message", ""))):
            logged[match[2]] = logged.get(match[2], 0.0) + float(match[1])
    for name, path in files.items():
        calls = {s.query: s for s in read_log(path, "app")}
        unnamed, prepared = (
            calls["SELECT id FROM items WHERE owner = '7'"],
            calls["SELECT owner FROM items WHERE id = '7'"],
        )
        assert (unnamed.calls, prepared.calls, calls["SELECT id, owner FROM items WHERE owner < 3"].calls) == (5, 5, 5)
        assert unnamed.total_time_ms == pytest.approx(logged["SELECT id FROM items WHERE owner = $1"]), name
        assert prepared.total_time_ms == pytest.approx(logged["SELECT owner FROM items WHERE id = $1"]), name


def test_parse_bind_and_fetch_time_go_to_the_execution_of_the_same_backend(tmp_path):
    entry = "2026-11-23 10:00:00.000 UTC [{}] LOG:  duration: {} ms  {}: SELECT * FROM t WHERE a = $1\n"
    detail = "2026-11-23 10:00:00.000 UTC [{}] DETAIL:  parameters: $1 = '{}'\n"
    log = tmp_path / "postgresql.log"
    log.write_text(
        entry.format(101, 1.0, "parse <unnamed>")
        + entry.format(102, 10.0, "parse <unnamed>")  # another backend, interleaved
        + entry.format(101, 2.0, "bind <unnamed>")
        + detail.format(101, 5)
        + entry.format(102, 20.0, "bind <unnamed>")
        + detail.format(102, 6)
        + entry.format(101, 4.0, "execute <unnamed>")
        + detail.format(101, 5)
        + entry.format(102, 40.0, "execute <unnamed>/C_1")
        + detail.format(102, 6)
        + entry.format(102, 100.0, "execute fetch from <unnamed>/C_1")  # the same execution, going on
        + detail.format(102, 6)
        + entry.format(101, 1000.0, "parse S_1")  # never executed: no call, no time
    )
    statements = {s.query: (s.calls, s.total_time_ms) for s in read_log(log)}
    assert statements == {"SELECT * FROM t WHERE a = '5'": (1, 7.0), "SELECT * FROM t WHERE a = '6'": (1, 170.0)}


def test_the_databases_statement_timeout_is_read_not_pgops_own(dsn, conn):
    conn.execute(sql.SQL("ALTER DATABASE {} SET statement_timeout = '45s'").format(sql.Identifier(conn.info.dbname)))
    with db.connect(dsn) as pgops_session:  # pgops' own session runs under its own 30 s
        assert pgops_session.execute("SHOW statement_timeout").fetchone() == ("30s",)
        assert read_statement_timeout(pgops_session) == 45_000.0
