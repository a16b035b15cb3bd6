from datetime import timedelta

import psycopg
import pytest
from psycopg import errors as pgerrors
from psycopg import sql

from pgops import db
from pgops.config import DatabaseSettings
from pgops.errors import EXIT_ERROR, ConnectError, PgopsError
from pgops.sandbox import free_port


def test_redact_hides_passwords():
    assert db.redact("postgresql://app:s3cret@db:5432/x") == "postgresql://app:***@db:5432/x"
    assert db.redact("host=db password=s3cret user=app") == "host=db password=*** user=app"
    assert db.redact("host=db password='s 3' user=app") == "host=db password=*** user=app"


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://u:Zm9v/s3cret+x=@127.0.0.1:1/db",  # an unencoded '/': libpq would take 'Zm9v' for the port
        "postgresql://u:Zm9v@s3cret@127.0.0.1:1/db",  # an unencoded '@'
        "postgres://u:Zm9v/s3cret@127.0.0.1:1/db?sslmode=disable",
    ],
)
@pytest.mark.parametrize(
    "command", [["status"], ["migrate"], ["cleanup", "run"], ["pool-report", "--format", "json"], ["advise-indexes"]]
)
def test_a_password_with_slash_or_at_is_never_printed(cli, dsn, command):
    result = cli("--dsn", dsn, *command)
    assert result.exit_code == EXIT_ERROR
    assert "Zm9v" not in result.stderr + result.stdout and "s3cret" not in result.stderr + result.stdout
    assert len(result.stderr.strip().splitlines()) == 1
    assert "percent-encode" in result.stderr


def test_redact_hides_a_password_up_to_the_last_at_and_every_password_it_was_given():
    assert db.redact("can't reach postgresql://u:a/b@c@host/db now") == "can't reach postgresql://u:***@host/db now"
    db.check_url("postgresql://u:L0ngSecret@host/db")
    assert db.redact('invalid value "L0ngSecret" somewhere') == 'invalid value "***" somewhere'
    assert db.describe("postgresql://u:Zm9v/s3cret@127.0.0.1:1/db") == "127.0.0.1:1/db as u"


def test_passwords_are_remembered_as_libpq_reads_them():
    for dsn, secret in [
        ("postgresql://u:p%40ssword@h/db", "p@ssword"),  # percent-decoded
        ("postgresql://h/db?password=qu3ry-pw&sslmode=require", "qu3ry-pw"),  # a query parameter
        ("host=h password='it\\'s secret'", "it's secret"),  # a keyword string's escapes
        ("postgresql://u:pa?ssword@host/db", "pa?ssword"),  # a '?' before the '@'
    ]:
        db.check_url(dsn)
        assert db.redact(f"libpq said: <{secret}> is wrong") == "libpq said: <***> is wrong", dsn
    assert db.describe("postgresql://host/d@b") == "host:5432/d@b"  # an '@' in a database name is no password


def test_the_users_options_are_kept_and_pgops_limits_win(dsn, monkeypatch):
    with db.connect(psycopg.conninfo.make_conninfo(dsn, options="-c search_path=app,public -c lock_timeout=9s")) as c:
        assert c.execute("SHOW search_path").fetchone() == ("app,public",)
        assert c.execute("SHOW lock_timeout").fetchone() == ("5s",)  # pgops' own limit, set after the user's
    monkeypatch.setenv("PGOPTIONS", "-c search_path=other")
    with db.connect(dsn) as conn:
        assert conn.execute("SHOW search_path").fetchone() == ("other",)
        assert conn.execute("SHOW standard_conforming_strings").fetchone() == ("on",)


def test_unreachable_server_is_one_line_without_password(cli):
    result = cli("--dsn", "postgresql://app:s3cret@127.0.0.1:1/appdb", "migrate")
    assert result.exit_code == EXIT_ERROR
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("pgops: error: can't connect to 127.0.0.1:1/appdb as app: ")
    assert "refused" in lines[0].lower()
    assert "s3cret" not in result.stderr + result.stdout


def test_missing_database_gives_server_reason(pg_server, cli):
    dsn = pg_server.database_dsn("no_such_db", password="hunter2")
    result = cli("--dsn", dsn, "migrate")
    assert result.exit_code == EXIT_ERROR
    assert 'database "no_such_db" does not exist' in result.stderr
    assert "/no_such_db" in result.stderr
    assert "hunter2" not in result.stderr


def test_malformed_dsn(cli):
    result = cli("--dsn", "password=pw host=db port", "migrate")
    assert result.exit_code == EXIT_ERROR
    assert result.stderr.startswith("pgops: error: invalid database URL")
    assert "pw " not in result.stderr and "password=***" in result.stderr


def test_connect_applies_session_settings(dsn):
    with db.connect(dsn) as conn:
        settings = dict(
            conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name IN "
                "('statement_timeout', 'lock_timeout', 'idle_in_transaction_session_timeout', 'application_name')"
            ).fetchall()
        )
    assert settings == {
        "application_name": "pgops",
        "statement_timeout": "30000",
        "lock_timeout": "5000",
        "idle_in_transaction_session_timeout": "60000",
    }


def test_is_transient():
    assert db.is_transient(pgerrors.SerializationFailure())
    assert db.is_transient(pgerrors.AdminShutdown())
    assert db.is_transient(pgerrors.LockNotAvailable())
    assert db.is_transient(psycopg.OperationalError("server closed the connection unexpectedly"))
    assert not db.is_transient(pgerrors.UndefinedTable())
    assert not db.is_transient(ValueError())


def test_retry_backs_off_then_succeeds():
    calls, sleeps = [], []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise pgerrors.DeadlockDetected()
        return "done"

    assert db.retry(flaky, sleep=sleeps.append, backoff=db.Backoff(base_delay=1)) == "done"
    assert len(calls) == 3
    assert len(sleeps) == 2 and 0 <= sleeps[0] <= 1 and 0 <= sleeps[1] <= 2


def test_retry_does_not_retry_real_errors():
    calls = []

    def broken():
        calls.append(1)
        raise pgerrors.UndefinedColumn()

    with pytest.raises(pgerrors.UndefinedColumn):
        db.retry(broken, sleep=lambda _: None)
    assert len(calls) == 1


def test_connect_error_type():
    with pytest.raises(PgopsError):
        db.connect("postgresql://127.0.0.1:1/x")


# -- db.connect's options and its one error translation ---------------------------------------------------------


def test_connect_options_shape_the_session(dsn):
    options = db.ConnectOptions(
        statement_timeout=timedelta(seconds=7),
        idle_in_transaction_session_timeout=None,
        read_only=True,
        autocommit=False,
        keepalives=True,
        application_name="pgops-test",
    )
    with db.connect(dsn, DatabaseSettings(), options) as conn:
        assert conn.autocommit is False
        assert conn.execute("SHOW statement_timeout").fetchone() == ("7s",)
        assert conn.execute("SHOW lock_timeout").fetchone() == ("5s",)  # not overridden: [database]'s
        assert conn.execute("SHOW idle_in_transaction_session_timeout").fetchone() == ("0",)  # left to the server
        assert conn.execute("SHOW application_name").fetchone() == ("pgops-test",)
        assert conn.info.get_parameters()["keepalives_idle"] == "10"
        with pytest.raises(pgerrors.ReadOnlySqlTransaction):
            conn.execute("CREATE TABLE not_written (id int)")
    with db.connect(dsn) as conn:  # the defaults: autocommit, [database]'s limits, writable
        assert conn.autocommit is True
        assert conn.execute("SHOW idle_in_transaction_session_timeout").fetchone() != ("0",)
        assert conn.execute("SHOW default_transaction_read_only").fetchone() == ("off",)
        assert "keepalives_idle" not in conn.info.get_parameters()


def test_the_pool_opens_the_sessions_connect_does(dsn):
    settings = DatabaseSettings(statement_timeout=timedelta(seconds=11))
    with db.make_pool(dsn, settings, min_size=1, max_size=1) as pool, pool.connection() as conn:
        assert conn.autocommit is True
        assert conn.execute("SHOW statement_timeout").fetchone() == ("11s",)
        assert conn.execute("SHOW application_name").fetchone() == ("pgops",)


def test_an_unreachable_host_is_a_transient_connect_error_without_password():
    url = f"postgresql://app:s3cret@127.0.0.1:{free_port()}/appdb"
    with pytest.raises(ConnectError) as failure:
        db.connect(url)
    assert failure.value.transient and db.is_transient(failure.value)
    assert failure.value.message.startswith("can't connect to 127.0.0.1:")
    assert "/appdb as app: " in failure.value.message and "s3cret" not in failure.value.message
    assert len(failure.value.message.splitlines()) == 1


def test_a_refused_login_and_a_missing_privilege_are_connect_errors_that_say_why(pg_server, dsn, dbname, conn):
    role = f"pgops_login_{dbname[-8:]}"
    conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
    try:
        with pytest.raises(ConnectError, match="is not permitted to log in") as refused:
            db.connect(pg_server.database_dsn(dbname, user=role, password="hunter22"))
        assert "hunter22" not in refused.value.message
        conn.execute(sql.SQL("ALTER ROLE {} LOGIN").format(sql.Identifier(role)))
        conn.execute(sql.SQL("REVOKE CONNECT ON DATABASE {} FROM PUBLIC").format(sql.Identifier(dbname)))
        with pytest.raises(ConnectError, match="CONNECT privilege") as denied:
            db.connect(pg_server.database_dsn(dbname, user=role))
        assert f'permission denied for database "{dbname}"' in denied.value.message
    finally:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_a_malformed_url_is_a_plain_pgops_error():
    with pytest.raises(PgopsError, match="invalid database URL") as failure:
        db.connect("host=127.0.0.1 port=1 nonsense_keyword=1")
    assert not isinstance(failure.value, ConnectError)
