"""Levels and exit codes: one mapping; the first line of an error, without its password."""

from __future__ import annotations

import psycopg
from psycopg_pool import PoolTimeout

from pgops import db
from pgops.errors import EXIT_CODES, LEVELS, Level, first_line, remember_secrets, worst


def test_each_level_has_one_exit_code_and_back():
    assert [level.exit_code for level in Level] == [0, 1, 2]
    assert {LEVELS[code] for code in EXIT_CODES.values()} == set(Level)


def test_worst_is_the_most_severe_and_ok_when_none():
    assert worst([]) is Level.OK
    assert worst([Level.WARNING, Level.OK]) is Level.WARNING
    assert worst(iter([Level.OK, Level.CRITICAL, Level.WARNING])) is Level.CRITICAL


def test_first_line_drops_hints_and_passwords():
    remember_secrets("postgresql://app:s3cr3t-pw@db/app")
    error = psycopg.OperationalError('connection to "db" failed: password s3cr3t-pw refused\nHINT: check pg_hba.conf')
    assert first_line(error) == 'connection to "db" failed: password *** refused'
    assert first_line(ValueError("")) == "ValueError"


def test_a_pool_timeout_is_transient():
    assert db.is_transient(PoolTimeout("couldn't get a connection after 30.00 sec"))
