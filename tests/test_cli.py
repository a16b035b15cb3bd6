import subprocess
import sys

from pgops import __version__


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
