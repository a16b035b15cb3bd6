"""Workload input through the CLI against a real PostgreSQL: statements over the size limits, files pgops can't
read, and server logs of every format."""

from __future__ import annotations

import json


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
