"""pg_stat_statements text made plannable and parsable, read with PostgreSQL's own lexer (pglast). Pure.

pg_stat_statements replaces every constant with `$n`, including ones the grammar needs as literals:
- a typed literal `date '2024-01-01'` becomes `date $1`, which neither PostgreSQL nor sqlglot reads: it is
  written `$1::date` (likewise time, timestamp, timestamptz, interval and the `with/without time zone` forms);
- `extract(year from d)` becomes `extract($1 from d)`: the field is written back as `epoch` (any field plans
  alike) and the remaining parameters are numbered again without the gap;
- lists are written `($1,$2,$3)`: a space goes after each parameter, which sqlglot's tokenizer needs;
- PostgreSQL 18 collapses constant lists into `($1 /*, ... */)` and `ARRAY[$1 /*, ... */]`: a one-element list
  with a comment, read as such.
Strings, quoted names and comments are left as they are: the lexer knows where they are.
"""

from __future__ import annotations

import re

import pglast

_TYPES = (
    ("timestamp", "with", "time", "zone"),
    ("timestamp", "without", "time", "zone"),
    ("time", "with", "time", "zone"),
    ("time", "without", "time", "zone"),
    ("timestamptz",),
    ("timestamp",),
    ("interval",),
    ("date",),
    ("time",),
)
_COMMENTS = {"SQL_COMMENT", "C_COMMENT"}
_PARAM = re.compile(r"\$(\d+)")


def normalize(text: str) -> str:
    """`text` rewritten so PostgreSQL can plan it and sqlglot can read it; unchanged if it does not lex."""
    try:
        tokens = [t for t in pglast.parser.scan(text) if t.name not in _COMMENTS]
    except pglast.parser.ParseError:
        return text
    words = [text[t.start : t.end + 1] for t in tokens]
    lowered = [w.lower() for w in words]
    replace: dict[int, tuple[int, str]] = {}  # token index -> (last token index it covers, new text)
    dropped = False
    for i, token in enumerate(tokens):
        if token.name != "PARAM":
            continue
        for shape in _TYPES:
            first = i - len(shape)
            if first >= 0 and tuple(lowered[first:i]) == shape and first not in replace:
                replace[first] = (i, f"{words[i]}::{' '.join(shape)}")
                break
        if i >= 2 and lowered[i - 2 : i] == ["extract", "("] and i + 1 < len(tokens) and lowered[i + 1] == "from":
            replace[i] = (i, "epoch")
            dropped = True
    out: list[str] = []
    position = 0
    i = 0
    while i < len(tokens):
        token = tokens[i]
        out.append(text[position : token.start])
        last, new = replace.get(i, (i, words[i]))
        out.append(new)
        position = tokens[last].end + 1
        ends_in_parameter = tokens[last].name == "PARAM" or new.startswith("$")
        if ends_in_parameter and position < len(text) and not text[position].isspace():
            out.append(" ")
        i = last + 1
    out.append(text[position:])
    result = "".join(out)
    return _renumber(result) if dropped else result


def _renumber(text: str) -> str:
    """`$2, $5` → `$1, $2`: PREPARE needs every parameter from $1 up to the highest to be used."""
    try:
        tokens = [t for t in pglast.parser.scan(text) if t.name == "PARAM"]
    except pglast.parser.ParseError:
        return text
    numbers = sorted({int(text[t.start + 1 : t.end + 1]) for t in tokens})
    new = {old: n for n, old in enumerate(numbers, 1)}
    out, position = [], 0
    for token in tokens:
        out.append(text[position : token.start])
        out.append(f"${new[int(text[token.start + 1 : token.end + 1])]}")
        position = token.end + 1
    out.append(text[position:])
    return "".join(out)


def plannable(text: str) -> str:
    """The statement as PostgreSQL can plan it and sqlglot can read it, without a trailing semicolon."""
    return normalize(text.strip().rstrip(";").strip())
