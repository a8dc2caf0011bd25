"""Tests for binclf.validate: each check converts good values and refuses bad ones in one line with the fix."""

from __future__ import annotations

import pytest

from binclf.errors import ConfigError
from binclf.validate import (
    check_batch_size,
    check_encoding,
    check_int,
    check_number,
    check_objective,
    check_pos_weight,
    check_sep,
    check_threshold,
)


def test_check_number_bounds_finiteness_and_message():
    """Text converts; out of bounds, NaN, inf, text and bools are refused naming option, value and example."""
    assert check_number("0.01", name="--lr", low=0, low_open=True) == 0.01
    assert check_number(1, name="x", low=0, high=1) == 1.0
    with pytest.raises(ConfigError, match=r"^--lr must be a number > 0, got '-1'; pass e.g. --lr 0.001$"):
        check_number("-1", name="--lr", low=0, low_open=True, example="0.001")
    with pytest.raises(ConfigError, match=r"got 'nan' \(not finite\)"):
        check_number("nan", name="--lr")
    with pytest.raises(ConfigError, match=r"in \[0, 1\], got 'inf'"):
        check_number("inf", name="t", low=0, high=1)
    with pytest.raises(ConfigError, match="got True"):
        check_number(True, name="x")
    with pytest.raises(ConfigError, match="pass e.g. lr=0.001"):
        check_number("abc", name="lr", example="0.001")


def test_check_int_refuses_fractions_and_text():
    """'3' is 3; '2.5', 'abc', booleans and values below the bound are refused."""
    assert check_int("3", name="--n", low=1) == 3
    for bad in ("2.5", "abc", True, 0):
        with pytest.raises(ConfigError, match="--n must be an integer >= 1"):
            check_int(bad, name="--n", low=1)


@pytest.mark.parametrize("bad", ["nan", float("nan"), "inf", "-0.1", "1.01", "x"])
def test_check_threshold_refuses_non_finite_and_out_of_range(bad):
    """A threshold is a finite probability: NaN (which made every row negative) is refused."""
    with pytest.raises(ConfigError, match="--threshold must be a number in \\[0, 1\\]"):
        check_threshold(bad)


def test_check_threshold_accepts_the_closed_interval():
    assert [check_threshold(v) for v in (None, "0", "1", 0.25)] == [None, 0.0, 1.0, 0.25]


def test_check_sep_one_character():
    """One character (\\t and 'tab' mean a tab); ';;', '' and a newline are refused."""
    assert [check_sep(v) for v in (None, ";", "\\t", "tab", "|")] == [None, ";", "\t", "\t", "|"]
    for bad in (";;", "", "\n", '"'):
        with pytest.raises(ConfigError, match="--sep must be one character"):
            check_sep(bad)


def test_other_checks():
    """Encodings Python knows; objectives as parse_objective reads them; pos_weight and batch_size forms."""
    assert check_encoding("latin-1") == "latin-1"
    with pytest.raises(ConfigError, match="'klingon' is not a known text encoding"):
        check_encoding("klingon")
    assert check_objective("cost:1,10") == "cost:1,10"
    with pytest.raises(ConfigError, match="^--objective: bad threshold objective 'f2'"):
        check_objective("f2")
    assert [check_pos_weight(v) for v in (None, "balanced", "2")] == [None, "balanced", 2.0]
    for bad in ("0", "-1", "inf", "heavy"):
        with pytest.raises(ConfigError, match="--pos-weight must be a number > 0 or 'balanced'"):
            check_pos_weight(bad)
    assert [check_batch_size(v) for v in ("auto", "64", 8)] == ["auto", 64, 8]
    for bad in ("0", "2.5", "big"):
        with pytest.raises(ConfigError, match="--batch-size must be an integer >= 1 or 'auto'"):
            check_batch_size(bad)
