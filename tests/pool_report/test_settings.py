"""The pool report's settings load from the file and the environment like every other section."""

from datetime import timedelta

import pytest

from pgops.config import load_settings
from pgops.errors import PgopsError


def test_pool_report_keys_from_file_and_environment(tmp_path):
    config = tmp_path / "pgops.toml"
    config.write_text('[pool_report]\nidle_pool_age = "30m"\nserver_cores = 8\nmask_queries = false\n')
    settings = load_settings(config, env={"PGOPS_POOL_REPORT_QUERY_LENGTH": "80"}).pool_report
    assert settings.idle_pool_age == timedelta(minutes=30)
    assert (settings.server_cores, settings.mask_queries, settings.query_length) == (8, False, 80)
    assert load_settings(env={}).pool_report.server_cores is None


def test_bad_pool_report_value_names_the_variable():
    with pytest.raises(PgopsError, match="PGOPS_POOL_REPORT_IDLE_POOL_SESSIONS"):
        load_settings(env={"PGOPS_POOL_REPORT_IDLE_POOL_SESSIONS": "many"})
