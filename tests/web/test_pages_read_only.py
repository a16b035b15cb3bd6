"""The pages only read: their connections are read-only at the server, and a read that fails is one line on
the page, not an error page."""

from __future__ import annotations

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgops import db
from pgops.config import load_settings
from pgops.web.history import History
from pgops.web.pages import PageContext, Pages, dispatch


def _pages(dsn: str) -> Pages:
    return Pages(PageContext(load_settings(env={}, dsn=dsn), dsn, History()))


def test_a_page_connection_cannot_write_and_keeps_the_urls_own_options(dsn):
    pages = _pages(make_conninfo(dsn, options="-c search_path=elsewhere,public"))
    assert "default_transaction_read_only=on" in conninfo_to_dict(pages.dsn)["options"]
    with db.connect(pages.dsn) as conn:
        assert conn.execute("SHOW search_path").fetchone()[0] == "elsewhere,public"
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("CREATE TABLE written_by_a_page (x int)")


def test_a_read_that_fails_is_one_line_on_its_page(dsn):
    pages = _pages(dsn)  # pgops is not installed in this database
    response = dispatch(pages, "/refresh")
    assert response.code == 200
    assert "can't read the watched views: pgops is not installed in this database" in response.body.decode()
    overview = dispatch(pages, "/").body.decode()
    assert "unknown" in overview and "pgops is not installed" in overview


def test_an_unknown_path_is_a_404_page_and_no_advice_is_a_404_file(dsn):
    pages = _pages(dsn)
    missing = dispatch(pages, "/<script>")
    assert missing.code == 404 and "&lt;script&gt;" in missing.body.decode() and "<script>" not in missing.body.decode()
    assert dispatch(pages, "/advice/fix.sql").code == 404
    assert "No advice yet" in dispatch(pages, "/advice").body.decode()
