"""Small readings of sqlglot nodes that extraction shares: identifiers as PostgreSQL folds them, the terms of an
AND chain, whether a side of a comparison is a value, a `$n` parameter's number, a literal's Python value."""

from __future__ import annotations

from sqlglot import exp


def norm(identifier: exp.Expression | str | None) -> str:
    """Postgres folds unquoted identifiers to lower case."""
    if identifier is None:
        return ""
    if isinstance(identifier, exp.Identifier):
        return identifier.this if identifier.quoted else identifier.this.lower()
    return str(identifier).lower()


def table_parts(table: exp.Table) -> tuple[str, str | None]:
    schema = table.args.get("db")
    return norm(table.args.get("this")), norm(schema) if schema is not None else None


def conjuncts(node: exp.Expression) -> list[exp.Expression]:
    """The terms of an AND chain, left to right; a loop, not recursion: a long chain is as deep as it is long."""
    found: list[exp.Expression] = []
    stack = [node]
    while stack:
        node = stack.pop()
        while isinstance(node, exp.Paren):
            node = node.this
        if isinstance(node, exp.And):
            stack += (node.expression, node.this)
        else:
            found.append(node)
    return found


def is_value(node: exp.Expression) -> bool:
    """A constant, a parameter, or an expression of them (`now() - interval '1 day'`): not a column or subquery."""
    return node.find(exp.Column, exp.Query) is None


def param_number(node: exp.Expression | None) -> int | None:
    while isinstance(node, exp.Cast | exp.Paren | exp.Any):
        node = node.this
    if isinstance(node, exp.Parameter):
        inner = node.this
        text = inner.this if isinstance(inner, exp.Literal | exp.Identifier) else str(inner)
        if str(text).isdigit():
            return int(text)
    return None


def literal(node: exp.Expression) -> str | int | float | bool | None:
    if isinstance(node, exp.Cast):
        node = node.this
    negative = isinstance(node, exp.Neg)
    if negative:
        node = node.this
    if isinstance(node, exp.Boolean):
        return bool(node.this)
    if isinstance(node, exp.Literal):
        if node.is_string:
            return node.this
        try:
            number = float(node.this) if any(ch in node.this for ch in ".eE") else int(node.this)
        except ValueError:
            return None
        return -number if negative else number
    return None
