import shutil
import subprocess

import pytest

from tests.conftest import ROOT


def _compose() -> list[str] | None:
    """`docker compose` (the plugin) or Debian's `docker-compose`, whichever this machine has."""
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    return ["docker-compose"] if shutil.which("docker-compose") else None


def test_compose_file_is_accepted():
    compose = _compose()
    if compose is None:
        pytest.skip("neither `docker compose` nor docker-compose is installed")
    result = subprocess.run([*compose, "config", "-q"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    services = subprocess.run(
        [*compose, "config", "--services"], cwd=ROOT, capture_output=True, text=True, timeout=60
    ).stdout.split()
    assert sorted(services) == ["pgops", "postgres"]
