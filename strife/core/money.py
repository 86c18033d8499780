"""Money is an integer count of minor units (cents). Text in, int out; no float ever."""
import re

from strife.core.errors import BadInput
from strife.core.untrusted import shown

# ASCII digits only (\d would take ١, １ or 𝟏), optionally a point and one or two decimals.
# No sign, exponent, nan or inf.
_AMOUNT = re.compile(r"([0-9]+)(?:\.([0-9]{1,2}))?")
MAX_WHOLE_DIGITS = 15  # 10^15 units in minor units stays far inside int64
MAX_LENGTH = MAX_WHOLE_DIGITS + 3


class AmountError(BadInput, ValueError):
    """An amount a user typed that cannot be money."""


def parse_amount(text, *, max_minor=None, allow_zero=False):
    """'50' -> 5000, '50.5' -> 5050, '50.25' -> 5025; anything else raises AmountError."""
    if isinstance(text, bool) or not isinstance(text, (str, int)):
        raise AmountError(f"{shown(text)} is not an amount: write it like 50 or 50.25")
    if isinstance(text, int) and abs(text) >= 10 ** MAX_WHOLE_DIGITS:  # str() of a huge int is refused too
        raise AmountError(f"too long: at most {MAX_WHOLE_DIGITS} digits before the point")
    raw = text.strip(" \t") if isinstance(text, str) else str(text)
    if len(raw) > MAX_LENGTH:  # before any conversion: int() of thousands of digits is slow or refused
        raise AmountError(f"{shown(raw, 20)} is too long: at most {MAX_WHOLE_DIGITS} digits before the point")
    match = _AMOUNT.fullmatch(raw)
    if match is None:
        if raw.startswith("-"):
            raise AmountError(f"{shown(raw)}: an amount cannot be negative")
        if re.fullmatch(r"[0-9]+\.[0-9]{3,}", raw):
            raise AmountError(f"{shown(raw)}: at most two decimals (cents)")
        raise AmountError(f"{shown(raw)} is not an amount: write it like 50 or 50.25, with the digits 0-9")
    whole, cents = match.group(1), (match.group(2) or "").ljust(2, "0")
    if len(whole) > MAX_WHOLE_DIGITS:
        raise AmountError(f"{shown(raw, 20)} is too long: at most {MAX_WHOLE_DIGITS} digits before the point")
    minor = int(whole) * 100 + int(cents)
    if minor == 0 and not allow_zero:
        raise AmountError(f"{shown(raw)}: the amount must be more than zero")
    if max_minor is not None and minor > max_minor:
        raise AmountError(f"{shown(raw)}: above the maximum of {format_minor(max_minor)}")
    return minor


def format_minor(minor):
    """5025 -> '50.25'; -5 -> '-0.05'."""
    sign = "-" if minor < 0 else ""
    whole, cents = divmod(abs(int(minor)), 100)
    return f"{sign}{whole}.{cents:02d}"
