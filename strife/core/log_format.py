"""How one log record becomes one line: text or JSON in a log file, coloured on a terminal.

Whatever a record holds (client-chosen text, a traceback, a line gRPC wrote to stderr), it is one
line: every character that could end, split or repaint a line is escaped (strife.untrusted).
The call log (a record per RPC, strife/nodes/interceptors.py) carries its fields in extra["call"]:
the text formats show them as `call node=... method=... code=OK ms=1.9`, JSON as keys.

These are loguru format functions: each stores its finished line in the record's extra and
returns a constant template naming it, so loguru never reads braces or markup in the content.
"""
import json
import traceback

from strife.core.untrusted import escape, quoted

TEXT = "{extra[_text]}\n"
JSON = "{extra[_json]}\n"
CONSOLE = ("<green>{time:HH:mm:ss.SSS}</green> <level>{level: <7}</level> "
           "<cyan>{extra[_logger]}</cyan>: {extra[_message]}\n")


def text_line(record):
    """`2026-11-26 01:16:34,493 INFO strife.calls: call node=bank1 ...` (the stdlib's layout)."""
    t = record["time"]
    record["extra"]["_text"] = (f"{_second(t)},{t.microsecond // 1000:03d} {record['level'].name} "
                                f"{logger_name(record)}: {message(record)}")
    return TEXT


_last_second = [None, ""]


def _second(t):
    """`2026-11-26 01:16:34`, formatted once per second (strftime per record shows on the hot path)."""
    key = (t.day, t.hour, t.minute, t.second)
    if _last_second[0] != key:
        _last_second[:] = key, t.strftime("%Y-%m-%d %H:%M:%S")
    return _last_second[1]


def json_line(record):
    """One JSON object: time, level, node, logger, message, and a call's fields as keys."""
    extra = record["extra"]
    doc = {"time": record["time"].isoformat(timespec="milliseconds"), "level": record["level"].name,
           "node": extra.get("node"), "logger": logger_name(record)}
    call = extra.get("call")
    if call is None:
        doc["message"] = message(record)
    else:
        doc["message"] = "call"
        doc.update(call)  # client-chosen values arrive escaped and bounded
    # ASCII only: no character json leaves raw (U+2028, U+0085, ...) can split the line
    extra["_json"] = json.dumps(doc, ensure_ascii=True, separators=(",", ":"))
    return JSON


def console_line(record):
    """`01:16:34.493 INFO    strife.calls: call ...` in colour; the supervisor prefixes the node."""
    extra = record["extra"]
    extra["_logger"] = logger_name(record)
    extra["_message"] = message(record)
    return CONSOLE


def logger_name(record):
    """The stdlib logger's name for records routed from `logging`, else the module's."""
    return record["extra"].get("logger") or record["name"] or "-"


def message(record):
    """The message (a call rendered as `key=value` pairs) and its traceback, on one line."""
    call = record["extra"].get("call")
    text = call_text(call) if call is not None else record["message"]
    exception = record["exception"]
    if exception is not None:
        text += " | " + "".join(traceback.format_exception(exception.type, exception.value, exception.traceback))
    # the safety net under the escaping of each client-chosen field: backslashes are left alone
    # so those fields' escapes are not doubled
    return escape(text.rstrip("\n"), backslash=False)


def call_text(call):
    """`call node=gateway method=Pay caller=alice txn_id=... code=OK ms=1.9`."""
    parts = ["call"]
    for key, value in call.items():
        kind = type(value)
        if kind is str:
            parts.append(f"{key}={quoted(value)}")
        elif kind is float:
            parts.append(f"{key}={value:.1f}")
        else:
            parts.append(f"{key}={value}")
    return " ".join(parts)
