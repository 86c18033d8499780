import pytest

from strife.core.money import AmountError, format_minor, parse_amount


@pytest.mark.parametrize("text, minor", [("50", 5000), ("50.5", 5050), ("50.25", 5025), ("0.01", 1),
                                         (" 7 ", 700), (12, 1200), ("10000.00", 1_000_000)])
def test_amounts_become_integer_cents(text, minor):
    assert parse_amount(text) == minor


@pytest.mark.parametrize("text, why", [("-5", "negative"), ("0", "more than zero"), ("0.00", "more than zero"),
                                       ("1.234", "two decimals"), ("nan", "not an amount"),
                                       ("inf", "not an amount"), ("1e3", "not an amount"),
                                       ("ten", "not an amount"), ("", "not an amount"), ("5.", "not an amount"),
                                       (1.5, "not an amount"), (True, "not an amount")])
def test_bad_amounts_are_refused_with_a_reason(text, why):
    with pytest.raises(AmountError, match=why):
        parse_amount(text)


def test_maximum_is_enforced():
    assert parse_amount("100.00", max_minor=10000) == 10000
    with pytest.raises(AmountError, match="above the maximum of 100.00"):
        parse_amount("100.01", max_minor=10000)


def test_zero_allowed_for_opening_balances():
    assert parse_amount("0", allow_zero=True) == 0


@pytest.mark.parametrize("minor, text", [(0, "0.00"), (5, "0.05"), (5025, "50.25"), (-5, "-0.05")])
def test_format(minor, text):
    assert format_minor(minor) == text
