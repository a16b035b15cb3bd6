"""The daemon's pages in a real headless browser (Debian's chromium through Playwright), on the demo application
served by a real `pgops daemon`: each page loads and shows what a test session made happen — a leak (a session
idle in transaction, named `<script>…`), a stale view, a cleanup run, the advice — and a chart draws its points.

With PGOPS_SCREENSHOTS=DIR (scripts/screenshots), each page's screenshot is saved there as PAGE.png.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pgops import demo, migrate
from pgops.config import load_settings
from pgops.refresh.watch import watch
from tests.conftest import create_database, drop_database
from tests.daemon.conftest import ROOT, free_port, http_get, wait_for

CHROMIUM = Path(os.environ.get("PGOPS_CHROMIUM", "/usr/bin/chromium"))
playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed: pip install -e .[dev]")
if not CHROMIUM.exists():
    pytest.skip(
        f"no browser at {CHROMIUM}: apt-get install chromium (scripts/bootstrap --dev does as root)",
        allow_module_level=True,
    )

HOSTILE_APP = "<script>alert('app')</script>"
HOSTILE_VIEW = "<script>alert('view')</script>"
SCREENSHOTS = os.environ.get("PGOPS_SCREENSHOTS")


@dataclass
class Site:
    url: str
    dsn: str
    log: Path
    page: object  # playwright's Page

    def open(self, path: str):
        response = self.page.goto(self.url + path)
        assert response is not None and response.status == 200, (path, response and response.status)
        return self.page

    def shot(self, name: str) -> None:
        if SCREENSHOTS:
            Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
            self.page.screenshot(path=str(Path(SCREENSHOTS) / f"{name}.png"), full_page=True)


LOOP = "SELECT id, name, email FROM customers WHERE id = $1"


def _prepare(dsn: str, tmp: Path) -> Path:
    """The demo with pgops installed and its workload; an application's loop of 1,000 single-row lookups; expired
    sessions; one watched view the daemon refreshes and
    one kept stale (a long debounce), named `<script>…`."""
    settings = load_settings(env={}, dsn=dsn)
    migrate.upgrade(dsn, settings)
    with psycopg.connect(dsn, autocommit=True) as conn:
        demo.load_schema(conn)
        demo.generate(conn, scale=0.01)
        conn.execute(
            f'CREATE MATERIALIZED VIEW "{HOSTILE_VIEW}" AS SELECT fund_id, count(*) FROM fund_trades GROUP BY 1'
        )
        conn.execute(f'CREATE UNIQUE INDEX ON "{HOSTILE_VIEW}" (fund_id)')
    demo.run_workload(dsn, statements=600, clients=2, seed=19)
    with psycopg.connect(dsn, autocommit=True, application_name="shop") as app:
        keys = [row[0] for row in app.execute("SELECT id FROM customers ORDER BY id LIMIT 1000")]
        for key in (keys * 1000)[:1000]:
            app.execute("SELECT id, name, email FROM customers WHERE id = %s", (key,)).fetchone()
    with psycopg.connect(dsn, autocommit=True) as conn:
        watch(conn, "fund_stats", replace(settings.refresh, debounce=timedelta(0), max_wait=timedelta(0)))
        # a long debounce: marked stale by the next write, and still stale when the page loads
        watch(
            conn,
            f'"{HOSTILE_VIEW}"',
            replace(settings.refresh, debounce=timedelta(hours=1), max_wait=timedelta(hours=2)),
        )
        conn.execute("INSERT INTO fund_trades (fund_id, amount) SELECT fund_id, 1 FROM fund_trades LIMIT 1")
    config = tmp / "pgops.toml"
    config.write_text(
        '[daemon]\njobs = ["refresh", "pool-sample"]\nplugins = ["tests.daemon.web_jobs:web_jobs"]\n'
        'health_interval = "0.5s"\n'
        '[refresh]\ninterval = "1s"\n'
        '[pool_report]\ninterval = "1s"\nidle_in_transaction = "1s"\n'
        '[cleanup]\nready_made = ["sessions"]\n'
        # the demo's bulk loads take most of the statement time here: the loop's share is well under 1%
        "[workload]\nsuspect_min_share = 0.0001\n"
        # any index that saves time, whatever it costs the demo's bulk loads: the advice has one to show
        "[advisor]\nmin_calls = 1\nmin_saving = 0.0\nmin_saving_per_size = 0.0\nmin_saving_per_mb = 0.0\n"
        "write_cost_ms = 0.0\n"
        f'output = "{tmp / "fix.sql"}"\n'
    )
    return config


@pytest.fixture(scope="module")
def site(pg_server, tmp_path_factory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("web")
    name = create_database(pg_server)
    dsn = pg_server.database_dsn(name)
    config = _prepare(dsn, tmp)
    port = free_port()
    log = tmp / "daemon.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PGOPS_", "NOTIFY_", "WATCHDOG_"))}
    env.update({"PGOPS_DATABASE_URL": dsn, "PYTHONPATH": str(ROOT)})
    leak = psycopg.connect(dsn, application_name=HOSTILE_APP)  # idle in transaction from here on
    leak.execute("SELECT count(*) FROM funds")
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pgops", "--config", str(config), "daemon", "--listen", f"127.0.0.1:{port}"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: proc.poll() is not None or _answers(url + "/healthz"), 60, "the daemon")
        assert proc.poll() is None, log.read_text()
        # what the pages show comes from the jobs: a cleanup run, the advice, a few pool samples
        wait_for(lambda: _outcomes(log, "cleanup:sessions"), 60, "a cleanup run")
        wait_for(lambda: _outcomes(log, "advisor"), 120, "the advice")
        # counted from /metrics: a run that says what the last one said is logged at debug only
        wait_for(lambda: _runs(url, "pool-sample") >= 3, 60, "three pool samples")
        wait_for(lambda: _refreshed(dsn), 60, "fund_stats refreshed")
        with playwright_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            dialogs: list[str] = []
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            yield Site(url, dsn, log, page)
            assert dialogs == [], f"a script ran: {dialogs}"
            browser.close()
    finally:
        proc.terminate()
        proc.wait(20)
        leak.close()
        drop_database(pg_server, name)


def _refreshed(dsn: str) -> bool:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT refresh_count > 0 FROM pgops.refresh_views WHERE view_name = 'fund_stats'"
        ).fetchone()[0]


def _answers(url: str) -> bool:
    try:
        return http_get(url)[0] == 200
    except OSError:  # not listening yet
        return False


def _runs(url: str, job: str) -> float:
    """The daemon's successful runs of `job`, from its /metrics."""
    _, body = http_get(url + "/metrics")
    for family in text_string_to_metric_families(body):
        if family.name == "pgops_daemon_job_runs":
            return sum(
                s.value for s in family.samples if s.labels.get("job") == job and s.labels.get("outcome") == "ok"
            )
    return 0.0


def _outcomes(log: Path, job: str) -> list[str]:
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    return [line["outcome"] for line in lines if line.get("job") == job and "outcome" in line]


def test_the_overview_lists_every_check_worst_first(site):
    page = site.open("/")
    rows = page.locator("#checks tr.check")
    assert rows.count() >= 8
    order = {"critical": 0, "unknown": 1, "warning": 2, "ok": 3}
    levels = [order[rows.nth(i).get_attribute("class").split()[1]] for i in range(rows.count())]
    assert levels == sorted(levels)
    text = page.inner_text("#checks")
    assert "idle in transaction" in text and "N+1 suspects" in text and "cleanup" in text
    site.shot("overview")


def test_connections_show_the_leak_as_text_with_the_statement_that_ends_it(site):
    page = site.open("/connections")
    leak = page.locator("#problems tr.problem", has_text="idle in transaction").first
    assert leak.locator(".application").inner_text() == HOSTILE_APP  # shown as text, not run
    pid = (
        psycopg.connect(site.dsn, autocommit=True)
        .execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s", (HOSTILE_APP,))
        .fetchone()[0]
    )
    assert leak.locator("code.copy").inner_text() == f"SELECT pg_terminate_backend({pid});"
    assert page.locator("#limits tr").count() >= 2
    # the saturation chart: an SVG with a line through the daemon's samples
    line = page.locator("svg.chart polyline.series").first
    assert int(line.get_attribute("data-points")) >= 3
    assert page.locator("svg.chart circle.point").count() >= 3
    box = line.bounding_box()
    assert box is not None and box["width"] > 0  # drawn, not just present
    site.shot("connections")


def test_refresh_shows_the_stale_view_and_the_refreshed_one(site):
    page = site.open("/refresh")
    names = [n.inner_text() for n in page.locator("#views tr.view td.name").all()]
    assert "public.fund_stats" in names and f"public.{HOSTILE_VIEW}" in names  # the hostile name as text
    stale = page.locator("#views tr.view", has=page.locator("td.name", has_text=HOSTILE_VIEW))
    assert "stale" in stale.inner_text() and "never" in stale.inner_text()
    fresh = page.locator("#views tr.view", has=page.locator("td.name", has_text="fund_stats"))
    assert "fresh" in fresh.inner_text() or "stale" in fresh.inner_text()  # a new write may have come since
    # fund_stats' last duration, read from pgops' table (pg_cron or the daemon may have refreshed it)
    assert page.locator("svg.chart rect.bar").count() >= 1
    site.shot("refresh")


def test_cleanup_shows_the_run_with_its_rows(site):
    page = site.open("/cleanup")
    first = page.locator("#runs tr.run").last  # the oldest shown: the run that deleted the expired sessions
    assert "sessions" in first.inner_text() and "done" in first.inner_text()
    deleted = [int(r.locator("td.num").first.inner_text().replace(",", "")) for r in page.locator("#runs tr.run").all()]
    assert max(deleted) > 0
    assert page.locator("svg.chart rect.bar").count() >= 1
    site.shot("cleanup")


def test_advice_shows_the_script_and_offers_it_for_download(site):
    page = site.open("/advice")
    script = page.inner_text("#script")
    assert script.startswith("SET client_encoding = 'UTF8';") and "-- pgops advise-indexes" in script
    # the demo's workload searches orders by customer: the index, with its reasons (statements, costs) above it
    assert "CREATE INDEX CONCURRENTLY" in script and "calls" in script and "cost" in script
    with page.expect_download() as download:
        page.click("text=Download fix.sql")
    path = download.value.path()
    assert Path(path).read_text() == (Path(site.log).parent / "fix.sql").read_text()
    assert download.value.suggested_filename == "fix.sql"
    site.shot("advice")


def test_workload_shows_the_loop_as_an_n_plus_one_suspect(site):
    page = site.open("/workload")
    # among the suspects (the demo's foreign key checks, one per inserted row, can weigh more on a given run)
    loop = page.locator("#suspects tr.statement", has_text=LOOP)
    assert loop.count() == 1, page.inner_text("main")
    assert "why: 1,000 calls" in loop.inner_text() and "= ANY($1)" in loop.inner_text()
    assert page.locator("#top tr.statement").count() >= 3
    assert "$1" in page.inner_text("#top")
    assert page.locator("svg.chart rect.bar").count() >= 3
    site.shot("workload")


def test_no_script_runs_and_none_could(site):
    """The hostile names are in the pages as text; the policy forbids any script anyway."""
    response = site.page.goto(site.url + "/connections")
    assert "script-src" not in response.headers["content-security-policy"]
    assert "default-src 'none'" in response.headers["content-security-policy"]
    html = site.page.content()
    assert HOSTILE_APP not in html and "&lt;script&gt;alert('app')&lt;/script&gt;" in html
