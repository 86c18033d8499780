"""Text chosen by someone else (a payee, a txn id, an error's details), made safe to log or show.

`escape` makes every character that could end, split or repaint a line visible instead
(`\\n`, `\\x1b`, `\\u2028`), so one record stays one line whatever the input; `field` also bounds
a value, with a marker saying how much was cut. Plain functions: any logging setup can use them.
"""
import unicodedata

MAX_FIELD = 128

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}
# control (C0, DEL, C1), format (bidi overrides, zero-width), surrogate, line and paragraph separators
_INVISIBLE = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def _escaped(char):
    if char in _NAMED:
        return _NAMED[char]
    if unicodedata.category(char) not in _INVISIBLE:
        return char  # printable non-ASCII (é, 世) stays readable
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def escape(text, backslash=True):
    """`text` on one line with nothing invisible: control and separator characters as escapes.

    backslash=False leaves backslashes alone: for a whole line whose fields are already escaped
    (a safety net must not double them), and for showing lines that were written escaped.
    """
    text = str(text)
    if text.isascii() and text.isprintable() and not (backslash and "\\" in text):
        return text  # printable ASCII: the common case, checked in C
    if backslash:
        return "".join(_escaped(c) for c in text)
    return "".join(c if c == "\\" else _escaped(c) for c in text)


def field(value, limit: int | None = MAX_FIELD) -> str:
    """One client-chosen value for a log line: escaped, at most `limit` characters of it kept
    (limit=None: the caller has bounded it already)."""
    text = str(value)
    if limit is None or len(text) <= limit:
        return escape(text)
    return f"{escape(text[:limit])}...[+{len(text) - limit} chars]"


def pair(key, value, limit=MAX_FIELD):
    """`key=value` for a structured line (the value escaped and bounded, then `quoted`)."""
    return f"{key}={quoted(field(value, limit))}"


def quoted(text):
    """An escaped value in quotes when it has a space, '=' or '"', so that text such as
    `bob code=OK` cannot pass for fields of its own."""
    if text == "" or " " in text or "=" in text or '"' in text:  # three scans in C: on the hot path
        return '"' + text.replace('"', '\\"') + '"'
    return text


def shown(value, limit=40):
    """A value quoted for a one-line error message: escaped, cut with '...' past `limit`."""
    text = str(value)
    return "'" + escape(text[:limit]).replace("'", "\\'") + "'" + ("..." if len(text) > limit else "")
