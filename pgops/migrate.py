"""`pgops migrate`: the same Alembic migrations as `alembic upgrade head`, without an alembic.ini.

Alembic (and SQLAlchemy under it) weigh about 40 MB, so they are imported only by the functions that run
migrations; `current_revision` is a plain query the daemon and `pgops status` use.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from typing import TYPE_CHECKING

from pgops import db
from pgops.config import Settings
from pgops.errors import PgopsError, first_line
from pgops.resources import migrations_dir

if TYPE_CHECKING:
    import psycopg
    from alembic.config import Config


def alembic_config(dsn: str | None, settings: Settings) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.attributes["dsn"] = dsn
    config.attributes["settings"] = settings
    return config


@contextmanager
def _refused() -> Iterator[None]:
    """A statement the server refuses (a missing privilege, a lock not granted in time, a downgrade that says why
    it can't) is one line and exit 3, not a traceback: the whole run is rolled back, so nothing is half-done."""
    from sqlalchemy.exc import DBAPIError

    try:
        yield
    except DBAPIError as exc:
        raise PgopsError(f"migration failed, nothing changed: {first_line(exc.orig or exc)}") from None


def upgrade(dsn: str, settings: Settings, revision: str = "head") -> None:
    from alembic import command

    with _refused():
        command.upgrade(alembic_config(dsn, settings), revision)


def downgrade(dsn: str, settings: Settings, revision: str = "base") -> None:
    from alembic import command

    with _refused():
        command.downgrade(alembic_config(dsn, settings), revision)


def upgrade_sql(settings: Settings, revision: str = "head") -> str:
    """The reviewable script `alembic upgrade head --sql` prints, without touching a database."""
    from alembic import command

    return _offline(settings, command.upgrade, revision)


def downgrade_sql(settings: Settings, revision: str = "base") -> str:
    """The script that downgrades from the latest revision to `revision` (offline, so from head)."""
    from alembic import command

    return _offline(settings, command.downgrade, f"{head_revision(settings)}:{revision}")


def _offline(settings: Settings, run, revision: str) -> str:
    out = io.StringIO()
    config = alembic_config(None, settings)
    config.stdout = out
    with redirect_stdout(out):
        run(config, revision, sql=True)
    return out.getvalue()


def current_revision(dsn: str, settings: Settings) -> str | None:
    """The installed revision, or None when pgops is not installed in this database."""
    with db.connect(dsn, settings.database) as conn:
        return installed_revision(conn)


def installed_revision(conn: psycopg.Connection) -> str | None:
    """`current_revision` on a connection already open to the database."""
    installed = conn.execute("SELECT to_regclass('pgops.alembic_version') IS NOT NULL").fetchone()[0]
    if not installed:
        return None
    row = conn.execute("SELECT version_num FROM pgops.alembic_version").fetchone()
    return row[0] if row else None


def head_revision(settings: Settings) -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config(None, settings)).get_current_head()
