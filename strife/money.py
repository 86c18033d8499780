"""Money is an integer count of minor units (cents). Text in, int out; no float ever."""
import re

# Digits, optionally a point and one or two decimals. No sign, exponent, nan or inf.
_AMOUNT = re.compile(r"(\d+)(?:\.(\d{1,2}))?")


class AmountError(ValueError):
    """An amount a user typed that cannot be money."""


def parse_amount(text, *, max_minor=None, allow_zero=False):
    """'50' -> 5000, '50.5' -> 5050, '50.25' -> 5025; anything else raises AmountError."""
    if isinstance(text, bool) or not isinstance(text, (str, int)):
        raise AmountError(f"{text!r} is not an amount: write it like 50 or 50.25")
    raw = str(text).strip()
    match = _AMOUNT.fullmatch(raw)
    if match is None:
        if raw.startswith("-"):
            raise AmountError(f"{raw!r}: an amount cannot be negative")
        if re.fullmatch(r"\d+\.\d{3,}", raw):
            raise AmountError(f"{raw!r}: at most two decimals (cents)")
        raise AmountError(f"{raw!r} is not an amount: write it like 50 or 50.25")
    whole, cents = match.group(1), (match.group(2) or "").ljust(2, "0")
    minor = int(whole) * 100 + int(cents)
    if minor == 0 and not allow_zero:
        raise AmountError(f"{raw!r}: the amount must be more than zero")
    if max_minor is not None and minor > max_minor:
        raise AmountError(f"{raw!r}: above the maximum of {format_minor(max_minor)}")
    return minor


def format_minor(minor):
    """5025 -> '50.25'; -5 -> '-0.05'."""
    sign = "-" if minor < 0 else ""
    whole, cents = divmod(abs(int(minor)), 100)
    return f"{sign}{whole}.{cents:02d}"
