import dataclasses
import json
import tempfile
import typing
from datetime import date, timedelta
from pathlib import Path

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgops.config import (
    MAX_DURATION,
    MAX_SIZE,
    Bounds,
    ByteSize,
    CleanupPolicy,
    Settings,
    Target,
    load_settings,
    parse_duration,
    parse_size,
    pg_cron_schedule,
)
from pgops.errors import EXIT_ERROR, PgopsError


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("250ms", 0.25), ("30s", 30), ("5m", 300), ("1h30m", 5400), ("2d", 172800), ("45", 45), (12, 12)],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "soon", "5 parsecs", "-3", "1h and a bit", True])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_parse_size():
    assert parse_size("2GB") == 2 * 1024**3
    assert parse_size("100kB") == 102400
    with pytest.raises(ValueError):
        parse_size("lots")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pgops.toml"
    path.write_text(text)
    return path


def test_file_then_environment_then_dsn(tmp_path):
    path = write(
        tmp_path,
        '[database]\nurl = "postgresql://file/db"\n[refresh]\ndebounce = "10s"\nmax_wait = "2m"\n'
        '[cleanup.policies.sessions]\ntable = "public.sessions"\nexpired_column = "expires_at"\n',
    )
    settings = load_settings(path, env={"PGOPS_REFRESH_DEBOUNCE": "3s", "PGOPS_POOL_REPORT_WARNING": "0.6"})
    assert settings.refresh.debounce == timedelta(seconds=3)
    assert settings.refresh.max_wait == timedelta(minutes=2)
    assert settings.pool_report.warning == 0.6
    assert settings.cleanup.policies["sessions"].expired_column == "expires_at"
    assert settings.dsn == "postgresql://file/db"
    assert load_settings(path, env={"DATABASE_URL": "postgresql://env/db"}).dsn == "postgresql://env/db"
    both = {"DATABASE_URL": "postgresql://env/db", "PGOPS_DATABASE_URL": "postgresql://pgops/db"}
    assert load_settings(path, env=both).dsn == "postgresql://pgops/db"
    assert load_settings(path, dsn="postgresql://option/db", env=both).dsn == "postgresql://option/db"


def test_unknown_key_names_key_and_file(tmp_path):
    path = write(tmp_path, '[refresh]\ndebounc = "10s"\n')
    with pytest.raises(PgopsError) as err:
        load_settings(path, env={})
    assert str(err.value).startswith(f"{path}: refresh.debounc: unknown key")
    assert "debounce" in str(err.value)
    assert err.value.exit_code == EXIT_ERROR


def test_unknown_section(tmp_path):
    with pytest.raises(PgopsError, match=r"pgops.toml: refrsh: unknown key"):
        load_settings(write(tmp_path, "[refrsh]\n"), env={})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[refresh]\ndebounce = "soon"\n', "refresh.debounce: expected a duration"),
        ('[cleanup.policies.logs]\ntable = "t"\nbatch_size = "many"\n', "cleanup.policies.logs.batch_size"),
        ("[cleanup.policies.logs]\nbatch_size = 10\n", "cleanup.policies.logs: missing required key table"),
        ("[pool_report]\nwarning = true\n", "pool_report.warning: expected a number"),
        ("[database]\nurl = 5\n", "database.url: expected a string"),
        ("[refresh\n", "not valid TOML"),
    ],
)
def test_bad_values_name_the_key(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(PgopsError) as err:
        load_settings(path, env={})
    assert str(path) in str(err.value)
    assert message in str(err.value)


def test_bad_environment_value_names_the_variable():
    with pytest.raises(PgopsError, match=r"environment variable PGOPS_REFRESH_MAX_WAIT: refresh\.max_wait"):
        load_settings(env={"PGOPS_REFRESH_MAX_WAIT": "whenever"})


def test_missing_explicit_file(tmp_path):
    with pytest.raises(PgopsError, match="config file not found"):
        load_settings(tmp_path / "nope.toml", env={})


def test_no_dsn_is_a_clear_error():
    with pytest.raises(PgopsError, match="no database URL"):
        _ = load_settings(env={}).dsn


def test_cli_rejects_bad_config_key(tmp_path, cli):
    path = write(tmp_path, "[daemon]\nlisten_on = '0.0.0.0:1'\n")
    result = cli("--config", path, "migrate", "--sql")
    assert result.exit_code == EXIT_ERROR
    assert result.stderr.strip().splitlines() == [
        f"pgops: error: {path}: daemon.listen_on: unknown key (known here: "
        "health_interval, jobs, listen, misfire_grace_time, plugins, pool_max_size, pool_min_size, stop_timeout)"
    ]


def one_line(message: str) -> bool:
    return "\n" not in message and "\r" not in message


# Every value is checked on load: (file text, the key the one-line error names, what it says). Each of these was
# accepted, or ended in a Python exception (exit 70), before the checks.
BAD_VALUES = [
    ('[cleanup.policies.x]\ntable = "t"\nolder_than = "99999999999d"\n', "cleanup.policies.x.older_than", "range"),
    ('[refresh]\ndebounce = "99999999999999999999999s"\n', "refresh.debounce", "out of range"),
    ("[refresh]\nmax_wait = 1e300\n", "refresh.max_wait", "out of range"),
    ("[refresh]\ndebounce = 1979-05-27\n", "refresh.debounce", "expected a duration"),
    ('[refresh]\ninterval = "0s"\n', "refresh.interval", "must be more than 0s"),
    ('[refresh]\ndebounce = "10m"\n', "refresh.debounce", "debounce (10m) must not be more than max_wait (5m)"),
    ('[refresh]\ncron_schedule = "every minute"\n', "refresh.cron_schedule", "expected 5 crontab fields"),
    ('[refresh]\ncron_schedule = "61 * * * *"\n', "refresh.cron_schedule", "minute '61'"),
    ("[daemon]\npool_max_size = 0\n", "daemon.pool_max_size", "must be at least 1"),
    ("[daemon]\npool_min_size = 5\npool_max_size = 2\n", "daemon.pool_min_size", "must not be more than"),
    ('[daemon]\nlisten = "nowhere"\n', "daemon.listen", "expected HOST:PORT"),
    ('[daemon]\nmisfire_grace_time = "0s"\n', "daemon.misfire_grace_time", "more than 0s"),
    ("[pool_report]\nwarning = 5\ncritical = 0.1\n", "pool_report.warning", "at least 0 and at most 1, got 5"),
    ("[pool_report]\nwarning = 0.95\ncritical = 0.9\n", "pool_report.warning", "must not be more than critical"),
    ("[pool_report]\ncritical = 0.5\n", "pool_report.critical", "warning (0.75) must not be more than critical"),
    ("[pool_report]\nwarning = -0.1\n", "pool_report.warning", "at least 0 and at most 1"),
    ("[pool_report]\nidle_growth_samples = 1\n", "pool_report.idle_growth_samples", "at least 2"),
    ("[pool_report]\nserver_cores = 0\n", "pool_report.server_cores", "at least 1"),
    ("[pool_report]\nxmin_age = -1\n", "pool_report.xmin_age", "at least 1"),
    ('[status]\nslot_wal_warning = "20GB"\n', "status.slot_wal_warning", "must not be more than slot_wal_critical"),
    ('[status]\nreplay_lag_critical = "0s"\n', "status.replay_lag_critical", "more than 0s"),
    ("[advisor]\nmax_size = -1\n", "advisor.max_size", "can't be negative"),
    ('[advisor]\nmax_size = "0"\n', "advisor.max_size", "at least 1"),
    ('[advisor]\nmax_size = "9999999999999999999999TB"\n', "advisor.max_size", "out of range"),
    ("[advisor]\nmax_indexes = -3\n", "advisor.max_indexes", "at least 1"),
    ("[advisor]\ntop = 0\n", "advisor.top", "at least 1"),
    ("[advisor]\ntop = 99999999999999999999\n", "advisor.top", "at most 2147483647"),
    ("[advisor]\nmin_saving = 1.5\n", "advisor.min_saving", "less than 1"),
    ('[advisor]\noutput = "fix\\u0000.sql"\n', "advisor.output", "NUL"),
    ('[cleanup.policies.x]\ntable = "t"\nbatch_size = 0\n', "cleanup.policies.x.batch_size", "at least 1"),
    ('[cleanup.policies.x]\ntable = "t"\nmax_rows = 0\n', "cleanup.policies.x.max_rows", "at least 1"),
    ('[cleanup.policies.x]\ntable = "t"\nmax_runtime = "0s"\n', "cleanup.policies.x.max_runtime", "more than 0s"),
    ('[cleanup.policies.x]\ntable = "t"\nschedule = "every minute"\n', "cleanup.policies.x.schedule", "crontab"),
    ('[cleanup.policies.x]\ntable = ""\n', "cleanup.policies.x.table", "must not be empty"),
    ('[cleanup]\nthrottle_pause = "0s"\n', "cleanup.throttle_pause", "more than 0s"),
    ("[cleanup]\nmax_lock_waiters = -1\n", "cleanup.max_lock_waiters", "at least 0"),
    ('[database]\nstatement_timeout = "30d"\n', "database.statement_timeout", "at most 24d20h31m23s647ms"),
    ('[database]\nlock_timeout = "0.5ms"\n', "database.lock_timeout", "0 (none) or at least 1ms"),
    ('[database]\nconnect_timeout = "0s"\n', "database.connect_timeout", "at least 1s"),
]


@pytest.mark.parametrize(("text", "key", "message"), BAD_VALUES, ids=[key for _, key, _ in BAD_VALUES])
def test_every_value_is_checked_on_load(tmp_path, text, key, message):
    path = write(tmp_path, text)
    with pytest.raises(PgopsError) as err:
        load_settings(path, env={})
    assert str(err.value).startswith(f"{path}: {key}: "), str(err.value)
    assert message in str(err.value) and one_line(str(err.value))
    assert err.value.exit_code == EXIT_ERROR


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("PGOPS_DAEMON_POOL_MAX_SIZE", "4MB", "daemon.pool_max_size: expected a whole number"),  # not a size
        ("PGOPS_DAEMON_POOL_MAX_SIZE", "0", "daemon.pool_max_size: must be at least 1"),
        ("PGOPS_POOL_REPORT_CRITICAL", "0.5", "pool_report.critical: warning (0.75) must not be more than critical"),
        ("PGOPS_REFRESH_MAX_WAIT", "99999999999d", "refresh.max_wait: '99999999999d' is out of range"),
        ("PGOPS_ADVISOR_TOP", "1" * 5000, "advisor.top: expected a whole number"),
    ],
)
def test_environment_values_are_checked_and_name_the_variable(variable, value, message):
    with pytest.raises(PgopsError) as err:
        load_settings(env={variable: value})
    assert str(err.value).startswith(f"environment variable {variable}: {message}"), str(err.value)
    assert one_line(str(err.value)) and len(str(err.value)) < 300


def test_good_values_still_load(tmp_path):
    path = write(
        tmp_path,
        '[refresh]\ncron_schedule = "30 seconds"\ndebounce = "5m"\n[database]\nstatement_timeout = 0\n'
        '[advisor]\nmax_size = "2GB"\nbuild_timeout = "0s"\n[pool_report]\nwarning = 0.9\ncritical = 0.9\n'
        '[daemon]\npool_min_size = 0\nlisten = ""\n[cleanup.policies.x]\ntable = "t"\nschedule = "0 3 * * mon-fri"\n',
    )
    settings = load_settings(path, env={"PGOPS_REFRESH_MAX_WAIT": "5m", "PGOPS_DAEMON_POOL_MAX_SIZE": "1"})
    assert settings.advisor.max_size == 2 * 1024**3 and settings.database.statement_timeout == timedelta(0)
    assert settings.refresh.debounce == settings.refresh.max_wait and settings.daemon.pool_max_size == 1


def test_every_numeric_setting_has_bounds():
    """The class, not the examples: a new int, float or duration setting can't be added without its range."""
    sections = [t for t in typing.get_type_hints(Settings).values() if dataclasses.is_dataclass(t)]
    checked = 0
    for owner in [*sections, CleanupPolicy]:
        hints = typing.get_type_hints(owner)
        for f in dataclasses.fields(owner):
            kinds = set(typing.get_args(hints[f.name])) or {hints[f.name]}
            if kinds & {int, float, timedelta, ByteSize}:
                assert isinstance(f.metadata.get("bounds"), Bounds), f"{owner.__name__}.{f.name} has no bounds"
                checked += 1
    assert len(sections) == 9 and checked > 50


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"[refresh]\ndebounce = '1s'\n\xff\xfe\x00\x01", "not UTF-8 text (byte 0xff on line 3)"),
        ('[database]\napplication_name = "café"\n'.encode("latin-1"), "not UTF-8 text (byte 0xe9 on line 2)"),
        (b"\x00" * (2 * 1024**2), "larger than 1MB"),
        (b"x = " + b"[" * 100_000, "nested too deeply"),
        (b"[advisor]\ntop = " + b"1" * 5000 + b"\n", "not valid TOML"),
    ],
    ids=["binary", "latin-1", "huge", "nested", "5000-digit-integer"],
)
def test_a_file_that_is_not_toml_is_one_line_naming_it(tmp_path, content, message):
    path = tmp_path / "pgops.toml"
    path.write_bytes(content)
    with pytest.raises(PgopsError) as err:
        load_settings(path, env={})
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value), str(err.value)
    assert one_line(str(err.value)) and len(str(err.value)) < 300


def test_a_utf8_file_with_a_byte_order_mark_loads(tmp_path):
    path = tmp_path / "pgops.toml"
    path.write_bytes('\ufeff[database]\napplication_name = "café"\n'.encode())
    assert load_settings(path, env={}).database.application_name == "café"


def test_cli_bad_config_is_one_line_and_exit_3(tmp_path, cli):
    for content in (b"[daemon]\npool_max_size = 0\n", b"\xff\xfe binary", b'[refresh]\ncron_schedule = "x"\n'):
        path = tmp_path / "pgops.toml"
        path.write_bytes(content)
        result = cli("--config", path, "migrate", "--sql")
        assert result.exit_code == EXIT_ERROR and "internal error" not in result.stderr
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith(f"pgops: error: {path}: ")


_NUMBER = st.from_regex(r"\A-?[0-9]{1,40}(\.[0-9]{1,10})?\Z")
_UNIT = st.sampled_from(["", "ms", "s", "m", "h", "d", "w", "b", "kB", "MB", "GB", "TB", " ", "x"])
_TEXT = st.one_of(st.text(max_size=40), st.builds(lambda n, u: n + u, _NUMBER, _UNIT), st.text("0123456789.smhdwkMGTB"))


@pytest.mark.parametrize(
    ("variable", "key", "value_of", "low", "high"),
    [
        ("PGOPS_REFRESH_CRON_KEEP_HISTORY", "refresh.cron_keep_history", lambda s: s.refresh.cron_keep_history,
         timedelta(0), MAX_DURATION),
        ("PGOPS_ADVISOR_MAX_SIZE", "advisor.max_size", lambda s: s.advisor.max_size, 1, MAX_SIZE),
    ],
    ids=["duration", "size"],
)  # fmt: skip
@given(text=_TEXT)
def test_any_duration_or_size_text_parses_within_range_or_is_the_config_error(variable, key, value_of, low, high, text):
    try:
        settings = load_settings(env={variable: text})
    except PgopsError as exc:
        assert str(exc).startswith(f"environment variable {variable}: {key}: ")
        assert one_line(str(exc)) and len(str(exc)) < 300
    else:
        assert low <= value_of(settings) <= high


_TOML_VALUES = st.one_of(
    st.integers(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(),
    st.booleans(),
    st.dates(),
    st.text(max_size=30),
    st.lists(st.integers(), max_size=3),
)


@given(
    value=_TOML_VALUES,
    key=st.sampled_from(["refresh.debounce", "advisor.max_size", "advisor.top", "pool_report.warning"]),
)
def test_any_toml_value_loads_within_range_or_is_the_config_error(value, key):
    section, name = key.split(".")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "pgops.toml"
        if isinstance(value, bool):
            literal = str(value).lower()
        else:
            literal = str(value) if isinstance(value, float | date) else json.dumps(value)  # TOML reads these
        path.write_text(f"[{section}]\n{name} = {literal}\n")
        try:
            settings = load_settings(path, env={})
        except PgopsError as exc:
            assert str(exc).startswith(f"{path}: ") and one_line(str(exc)) and len(str(exc)) < 300
        else:
            fields = {f.name: f for f in dataclasses.fields(getattr(settings, section))}
            assert fields[name].metadata["bounds"].problem(getattr(getattr(settings, section), name)) is None


# pg_cron's own answers (cron.schedule on the test server, pg_cron 1.4), and pgops' on load. `N seconds` is pg_cron
# 1.5's: pgops accepts it on load, and an older pg_cron's refusal is tested with the migration.
PG_CRON_ACCEPTS = [
    "* * * * *",
    "*/5 * * * *",
    "0 3 * * *",
    "5 4 * * sun",
    "0 0 1 jan *",
    "0-30/10 8-18 * * Mon-Fri",
    "0,15,30,45 * * * *",
    "* * 31 12 7",
    "  * * * * *  ",
    "@hourly",
    "@daily",
    "@reboot",
]
PG_CRON_REFUSES = [
    "every minute",
    "* * * *",
    "60 * * * *",
    "* 24 * * *",
    "* * 0 * *",
    "* * * 13 *",
    "* * * * 8",
    "5/10 * * * *",
    "*/0 * * * *",
    "mon * * * *",
    "* * * * monday",
    "-1 * * * *",
    "@often",
    "@HOURLY",
]
# pg_cron ignores a 6th field and anything after a value up to the next blank; a backwards range never matches
PGOPS_IS_STRICTER = ["* * * * * *", "5; * * * *", "1-2-3 * * * *", "*-5 * * * *", "30-10 * * * *"]


@pytest.mark.parametrize("schedule", [*PG_CRON_ACCEPTS, "30 seconds", "1 second", "59 Seconds", " 5seconds ", ""])
def test_cron_schedule_accepts_what_pg_cron_accepts(schedule):
    pg_cron_schedule(schedule)


@pytest.mark.parametrize("schedule", [*PG_CRON_REFUSES, *PGOPS_IS_STRICTER, "0 seconds", "60 seconds", "5 secs"])
def test_cron_schedule_refuses_what_pg_cron_refuses(schedule):
    with pytest.raises(ValueError) as err:
        pg_cron_schedule(schedule)
    assert one_line(str(err.value))


@pytest.mark.needs_pg_cron
def test_cron_schedule_table_agrees_with_the_servers_pg_cron(pg_server):
    """The tables above are pg_cron's answers: ask the server's pg_cron (in a transaction rolled back)."""
    answers = {}
    with psycopg.connect(pg_server.cron_dsn, autocommit=True) as conn:
        for schedule in PG_CRON_ACCEPTS + PG_CRON_REFUSES + PGOPS_IS_STRICTER:
            try:
                with conn.transaction(force_rollback=True):
                    conn.execute("SELECT cron.schedule('pgops-test-schedule', %s, 'SELECT 1')", (schedule,))
                answers[schedule] = True
            except psycopg.errors.InvalidParameterValue:
                answers[schedule] = False
    assert [s for s in PG_CRON_ACCEPTS + PGOPS_IS_STRICTER if not answers[s]] == []
    assert [s for s in PG_CRON_REFUSES if answers[s]] == []


# -- targets ---------------------------------------------------------------------------------------------------


TWO_TARGETS = (
    '[targets.primary]\nurl = "postgresql://app:s3cret-pw@db1/app"\n'
    '[targets.replica-1]\nurl = "postgresql://app@db2/app"\n'
)


def test_targets_in_file_order(tmp_path):
    path = write(tmp_path, '[targets.zeta]\nurl = "postgresql://z/app"\n' + TWO_TARGETS)
    settings = load_settings(path, env={})
    assert settings.targets() == (
        Target("zeta", "postgresql://z/app"),
        Target("primary", "postgresql://app:s3cret-pw@db1/app"),
        Target("replica-1", "postgresql://app@db2/app"),
    )
    assert settings.target("replica-1").url == "postgresql://app@db2/app"
    assert "s3cret" not in repr(settings.targets())  # a target's repr never shows its password
    assert settings.dsn == "postgresql://z/app"  # one-server commands: the first target, without [database] url
    with_database = write(tmp_path, '[database]\nurl = "postgresql://main/app"\n' + TWO_TARGETS)
    settings = load_settings(with_database, env={})
    assert settings.dsn == "postgresql://main/app"
    assert [t.name for t in settings.targets()] == ["primary", "replica-1"]


def test_no_targets_is_one_target_named_default(tmp_path):
    settings = load_settings(write(tmp_path, '[database]\nurl = "postgresql://file/db"\n'), env={})
    assert settings.targets() == (Target("default", "postgresql://file/db"),)
    assert settings.target("default").url == "postgresql://file/db"
    assert load_settings(env={"DATABASE_URL": "postgresql://env/db"}).targets() == (
        Target("default", "postgresql://env/db"),
    )
    with pytest.raises(PgopsError, match="no database URL"):
        load_settings(env={}).targets()


@pytest.mark.parametrize(
    ("dsn", "env"),
    [("postgresql://option/db", {}), (None, {"PGOPS_DATABASE_URL": "postgresql://option/db"})],
)
def test_an_explicit_url_is_the_one_target(tmp_path, dsn, env, caplog):
    settings = load_settings(write(tmp_path, TWO_TARGETS), dsn=dsn, env=env)
    assert settings.targets() == (Target("default", "postgresql://option/db"),)
    # --dsn is asked for on the command line; a variable may be a forgotten one, so that one is said
    replaced = [r.getMessage() for r in caplog.records if "replaces the 2 targets" in r.getMessage()]
    assert replaced == (
        []
        if dsn
        else [
            f"PGOPS_DATABASE_URL in the environment replaces the 2 targets of "
            f"{tmp_path / 'pgops.toml'}: unset it to use them"
        ]
    )
    with pytest.raises(PgopsError, match=r"no target named 'primary': a URL from --dsn.* names primary, replica-1"):
        settings.target("primary")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[targets.Primary]\nurl = "postgresql://h/d"\n', "targets.'Primary': a target's name is 1 to 63 of a-z"),
        ('[targets."a b"]\nurl = "postgresql://h/d"\n', "targets.'a b': a target's name"),
        ('[targets."x\\ny"]\nurl = "postgresql://h/d"\n', "targets.'x\\ny': a target's name"),
        ("[targets.db1]\n", "targets.db1: missing required key url"),
        ('[targets.db1]\nurl = "postgresql://h/d"\nport = 5\n', "targets.db1.port: unknown key (known here: url)"),
        ("[targets.db1]\nurl = 5\n", "targets.db1.url: expected a string, got 5"),
        ('[targets.db1]\nurl = " "\n', "targets.db1.url: must not be empty"),
        ('targets = "db1"\n', "targets: expected a table of [targets.NAME] tables"),
        ('targets.db1 = "postgresql://h/d"\n', "targets.db1: expected a table with url = ..."),
        (
            '[targets.db1]\nurl = "postgresql://app:pa/ss@h/d"\n',
            "targets.db1.url: invalid database URL 'postgresql://app:***@h/d': its user or password holds",
        ),
    ],
)
def test_bad_targets_name_the_key_and_file(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(PgopsError) as err:
        load_settings(path, env={})
    assert str(err.value) == f"{path}: {message}" or str(err.value).startswith(f"{path}: {message}")
    assert "\n" not in str(err.value)
    assert "pa/ss" not in str(err.value)


def test_unknown_target_names_the_known_ones(tmp_path):
    path = write(tmp_path, TWO_TARGETS)
    with pytest.raises(PgopsError) as err:
        load_settings(path, env={}).target("replica")
    assert str(err.value) == f"{path}: no target named 'replica' (known: primary, replica-1)"


def test_unknown_top_level_key_lists_targets(tmp_path):
    with pytest.raises(PgopsError, match=r"target: unknown key \(known here: .*status, targets, web, workload\)"):
        load_settings(write(tmp_path, "[target]\n"), env={})
