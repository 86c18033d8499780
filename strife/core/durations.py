"""Durations as people write them in YAML and on the command line: 500ms, 2s, 1.5m, 1h."""
import re

from strife.core.errors import BadInput

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")


class DurationError(BadInput, ValueError):
    pass


def parse_duration(text):
    """Seconds as a float. A bare number means seconds."""
    if isinstance(text, bool):
        raise DurationError(f"{text!r} is not a duration: write it like 500ms, 2s or 1m")
    if isinstance(text, (int, float)):
        seconds = float(text)
    else:
        raw = str(text).strip()
        match = _DURATION.fullmatch(raw)
        if match:
            seconds = float(match.group(1)) * _UNITS[match.group(2)]
        elif re.fullmatch(r"\d+(?:\.\d+)?", raw):
            seconds = float(raw)
        else:
            raise DurationError(f"{raw!r} is not a duration: write it like 500ms, 2s or 1m")
    if seconds <= 0:
        raise DurationError(f"{text!r}: a duration must be more than zero")
    return seconds
