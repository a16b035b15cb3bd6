"""Every job in one shape (docs/design/jobs.md): `prepare(conn, settings) -> Plan` and `run(conn, plan, progress)
-> Result` with a `Level` outcome, called by both the CLI and the daemon; the library never draws progress."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import typing
from pathlib import Path

import pytest

from pgops.errors import Level
from pgops.progress import QUIET, Progress, track

PGOPS = Path(__file__).resolve().parent.parent / "pgops"
JOBS = ["pgops.cleanup", "pgops.pool_report", "pgops.workload", "pgops.status"]


@pytest.mark.parametrize("name", JOBS)
def test_each_job_exposes_the_contract(name):
    job = importlib.import_module(name)
    assert list(inspect.signature(job.prepare).parameters) == ["conn", "settings"]
    assert list(inspect.signature(job.run).parameters) == ["conn", "plan", "progress"]
    assert inspect.signature(job.run).parameters["progress"].default is QUIET
    assert dataclasses.is_dataclass(job.Plan) and job.Plan.__dataclass_params__.frozen
    hints = typing.get_type_hints(job.run)
    assert hints["plan"] is job.Plan and hints["progress"] is Progress
    assert typing.get_type_hints(job.prepare)["return"] is job.Plan
    result = hints["return"]
    assert isinstance(result.outcome, property)
    assert typing.get_type_hints(result.outcome.fget)["return"] is Level


def _calls(path: Path) -> set[str]:
    """`module.function` for every call of an attribute of a name in the file (`cleanup.run`, `pool.prepare`)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        func = node.func if isinstance(node, ast.Call) else None
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
            found.add(f"{func.value.id}.{func.attr}")
    return found


@pytest.mark.parametrize(
    ("cli", "alias", "old"),
    [
        ("cleanup", "cleanup", {"run_policy", "validate_all"}),
        ("pool_report", "pool", {"pool.report"}),
        ("workload", "workload_job", {"workload_job.report"}),
        ("status", "status", {"status.gather"}),
    ],
)
def test_the_cli_calls_the_contract(cli, alias, old):
    calls = _calls(PGOPS / "cli" / f"{cli}.py")
    assert {f"{alias}.prepare", f"{alias}.run"} <= calls
    source = (PGOPS / "cli" / f"{cli}.py").read_text()
    assert not [name for name in old if f"{name}(" in source]


def test_the_daemon_calls_the_contract():
    calls = _calls(PGOPS / "daemon" / "jobs.py")
    assert {"cleanup.prepare", "cleanup.run", "pool_report.prepare", "pool_report.run"} <= calls
    source = (PGOPS / "daemon" / "jobs.py").read_text()
    assert "run_policy(" not in source and "take_sample(" not in source


def test_the_pages_call_the_contract():
    calls = _calls(PGOPS / "web" / "pages.py")
    assert {f"{job}.{step}" for job in ("pool_report", "status", "workload") for step in ("prepare", "run")} <= calls


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {f"{node.module}.{alias.name}" for alias in node.names} | {node.module}
    return found


LIBRARY = [
    *sorted((PGOPS / "advisor").glob("*.py")),
    *sorted((PGOPS / "cleanup").glob("*.py")),
    *sorted((PGOPS / "pool_report").glob("*.py")),
    *sorted((PGOPS / "workload").glob("*.py")),
    PGOPS / "status.py",
]


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: str(p.relative_to(PGOPS)))
def test_the_library_renders_nothing(path):
    """Rich tables and progress bars are the CLI's: a job reports through its result and a `Progress`."""
    imports = _imports(path)
    assert not [name for name in imports if name == "rich" or name.startswith("rich.")]
    assert "pgops.output.progress" not in imports


def test_track_reports_each_item():
    class Counting:
        def __init__(self):
            self.seen = []

        def task(self, description, total=None):
            parent = self

            class Task:
                def __enter__(self):
                    return lambda n=1, **fields: parent.seen.append((description, total, n))

                def __exit__(self, *exc):
                    return False

            return Task()

    counting = Counting()
    assert list(track(counting, "planning", [4, 5], 2)) == [4, 5]
    assert counting.seen == [("planning", 2, 1), ("planning", 2, 1)]
