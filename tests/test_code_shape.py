"""Rules on the shape of pgops' own code, checked by reading it (no database)."""

from __future__ import annotations

import ast
from pathlib import Path

PGOPS = Path(__file__).resolve().parent.parent / "pgops"
MAX_PARAMETERS = 5


def _is_cli_command(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """A typer command or callback: its parameters are the command line's options, declared one by one."""
    for decorator in node.decorator_list:
        call = decorator.func if isinstance(decorator, ast.Call) else decorator
        if isinstance(call, ast.Attribute) and call.attr in ("command", "callback"):
            return True
    return False


def parameter_count(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Every parameter a caller can pass, `self`/`cls` aside."""
    arguments = node.args
    names = [a.arg for a in (*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs)]
    if names and names[0] in ("self", "cls"):
        names = names[1:]
    return len(names) + (arguments.vararg is not None) + (arguments.kwarg is not None)


def offenders(root: Path) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and not _is_cli_command(node):
                count = parameter_count(node)
                if count > MAX_PARAMETERS:
                    found.append(f"{path.relative_to(root.parent)}:{node.lineno} {node.name}() takes {count}")
    return found


def test_no_function_takes_more_than_five_parameters():
    """Parameters that travel together are grouped in a dataclass (settings, options); typer commands, whose
    parameters are their command-line options, are the exception."""
    assert offenders(PGOPS) == []


def test_the_rule_sees_a_long_signature(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "m.py").write_text(
        "import typer\napp = typer.Typer()\n"
        "def f(a, b, c, d, e, f): ...\n"
        "class C:\n    def m(self, a, b, c, d, e): ...\n    def n(self, a, b, c, d, *e, **f): ...\n"
        "@app.command()\ndef cmd(a, b, c, d, e, f): ...\n"
    )
    assert offenders(package) == ["pkg/m.py:3 f() takes 6", "pkg/m.py:6 n() takes 6"]
