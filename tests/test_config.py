from datetime import timedelta
from pathlib import Path

import pytest

from pgops.config import load_settings, parse_duration, parse_size
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
