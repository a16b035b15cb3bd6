import subprocess
import sys

import pytest

from pgops import __version__
from pgops.errors import EXIT_ERROR


def test_version(cli):
    result = cli("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"pgops {__version__}"


def test_help_describes_every_option(cli):
    result = cli("--help")
    assert result.exit_code == 0
    for option in ("--config", "--dsn", "--debug", "--version"):
        assert option in result.stdout
    for command in ("sandbox", "migrate"):
        assert command in result.stdout


def test_sandbox_help(cli):
    result = cli("sandbox", "--help")
    assert result.exit_code == 0
    for command in ("start", "stop", "status", "url"):
        assert command in result.stdout
    for command in ("start", "stop", "status", "url"):
        sub = cli("sandbox", command, "--help")
        assert sub.exit_code == 0 and "--dir" in sub.stdout


def test_console_script_runs():
    proc = subprocess.run([sys.executable, "-m", "pgops", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("pgops ")


@pytest.mark.parametrize(
    "args",
    [
        ["advise-indexes", "--top!", "-5"],
        ["advise-indexes", "--top!", "abc"],
        ["advise-indexes", "--top!", "99999999999999999999"],
        ["advise-indexes", "--max-indexes!", "-3"],
        ["advise-indexes", "--min-calls!", "-1"],
        ["advise-indexes", "--max-size!", "-1"],
        ["advise-indexes", "--max-size!", "0"],
        ["advise-indexes", "--min-total-time!", "99999999999d"],
        ["advise-indexes", "--format!", "xml"],
        ["cleanup", "run", "--table", "t", "--expired-column", "c", "--batch-size!", "0"],
        ["cleanup", "run", "--table", "t", "--expired-column", "c", "--max-rows!", "-1"],
        ["cleanup", "run", "--table", "t", "--older-than!", "created_at=99999999999d"],
        ["cleanup", "run", "--table", "t", "--expired-column", "c", "--max-runtime!", "99999999999d"],
        ["pool-report", "--watch!", "inf", "--count", "1"],
        ["pool-report", "--watch", "1", "--count!", "0"],
        ["pool-report", "--terminate-idle-in-transaction-over!", "99999999999d"],
        ["refresh", "watch", "v", "--debounce!", "99999999999d"],
        ["systemd-unit", "--watchdog-sec!", "99999999999"],
        ["workload", "--top!", "0"],
        ["workload", "--format!", "xml"],
    ],
    ids=lambda args: " ".join(args).replace("!", ""),
)
def test_bad_option_values_are_one_line_and_exit_3(cli, dsn, args):
    """The option marked `!` is the one the message must name.

    Bad input ends with one line naming the option and exit 3 (README), before anything runs: not typer's usage
    box and exit 2, not a Python exception (exit 70), and never accepted."""
    result = cli("--dsn", dsn, *(a.rstrip("!") for a in args))
    assert result.exit_code == EXIT_ERROR, (result.exit_code, result.stderr)
    (line,) = result.stderr.strip().splitlines()
    option = next(a for a in args if a.startswith("--") and a.endswith("!")).rstrip("!")
    assert line.startswith("pgops: error: ") and option in line and "internal error" not in line, line
