"""Workload input through the CLI against a real PostgreSQL: statements over the size limits, files pgops can't
read, and server logs of every format."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from pgops.advisor import workload
from pgops.advisor.model import SKIP_TOO_LARGE, Skipped
from pgops.advisor.parse import analyze
from pgops.advisor.workload import read_file, read_log
from pgops.errors import PgopsError
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
