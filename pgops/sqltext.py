"""Text that pgops writes where SQL is read: scripts a DBA runs as superuser, and reports on a terminal.

Every name and text that comes from the database or the user is hostile: a column named
`"x<newline>ALTER ROLE me SUPERUSER; --"` must stay inside the comment or the quoted identifier it is written
in. One function per context, used everywhere:

- `printable(text)`: one line, no control or invisible character (a newline, a carriage return that ends a
  `--` comment for the server, a terminal escape, a bidirectional override that hides text from a reviewer);
  each is written as a backslash escape, and a backslash itself is doubled, so the text reads back exactly;
- `comment(text)`: a `--` comment line holding `printable(text)`;
- `identifier(*names)` and `literal(value)` inside statements: `psycopg.sql.Identifier` and `psycopg.sql.Literal`,
  except that a name or text holding a character `printable` would escape is written in PostgreSQL's Unicode
  escape form (`U&"..."`, `U&'...'`), so a statement stays on one line and shows a reviewer what it does;
- a statement only as a `psycopg.sql.Composable`.
"""

from __future__ import annotations

from psycopg import sql

_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(char: str) -> str:
    if char in _ESCAPES:
        return _ESCAPES[char]
    if char.isprintable():
        return char
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(text: str) -> str:
    """`text` on one line of printable characters: newlines, control, format and separator characters (other
    than the plain space) become backslash escapes, and a backslash becomes two."""
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(map(_escape, text))


def comment(text: str = "") -> str:
    """A `--` comment line that ends where the line ends, whatever `text` holds."""
    return f"-- {printable(text)}".rstrip()


def _unicode_escaped(text: str, quote: str) -> bytes:
    body = "".join(
        "\\\\" if c == "\\" else quote * 2 if c == quote else c if c.isprintable() else f"\\+{ord(c):06x}" for c in text
    )
    return f"U&{quote}{body}{quote}".encode()


class _Identifier(sql.Identifier):
    def as_bytes(self, context: object = None) -> bytes:  # type: ignore[override]
        parts: tuple[str, ...] = self._obj
        if all(part.isprintable() for part in parts):
            return super().as_bytes(context)  # type: ignore[arg-type]
        return b".".join(_unicode_escaped(part, '"') for part in parts)


class _Literal(sql.Literal):
    def as_bytes(self, context: object = None) -> bytes:  # type: ignore[override]
        if isinstance(self._obj, str) and not self._obj.isprintable():
            return _unicode_escaped(self._obj, "'")
        return super().as_bytes(context)  # type: ignore[arg-type]


def identifier(*names: str) -> sql.Identifier:
    """A (qualified) name, quoted as psycopg quotes it, on one line whatever it holds."""
    return _Identifier(*names)


def literal(value: object) -> sql.Literal:
    """A constant as psycopg writes it; text holding a newline or another control character on one line."""
    return _Literal(value)


class Script:
    """A SQL script built from comment lines and composed statements only, so nothing else can land in it."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def comment(self, text: str = "") -> None:
        self._lines.append(comment(text))

    def commented(self, statement: sql.Composable, prefix: str = "", note: str = "") -> None:
        """A statement to review, commented out, as it would run: its composed text is one printable line
        (names as `U&"..."`), so it is written as it is, not escaped again; the note is escaped."""
        text = statement.as_string(None) + ";"  # type: ignore[arg-type]
        if not text.isprintable():
            text = printable(text)
        self._lines.append(f"-- {printable(prefix)}{text}" + (f"  -- {printable(note)}" if note else ""))

    def statement(self, statement: sql.Composable, context: object = None) -> None:
        self._lines.append(statement.as_string(context) + ";")  # type: ignore[arg-type]

    def blank(self) -> None:
        self._lines.append("")

    def text(self) -> str:
        return "\n".join(self._lines) + "\n"
