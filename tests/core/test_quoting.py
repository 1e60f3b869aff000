"""Client values in error messages: quoted whole when short, clipped with their length when long."""

from __future__ import annotations

from imagegate.core.quoting import clip, quote


def test_short_values_are_quoted_whole():
    assert quote("1024x") == "'1024x'"
    assert quote(5) == "5"
    assert quote(True) == "True"
    assert quote(None) == "None"
    assert quote("x" * 100) == repr("x" * 100)


def test_long_values_are_clipped_and_say_how_long_they_were():
    assert quote("x" * 101) == "'" + "x" * 100 + "\u2026' (101 characters)"
    assert quote("y" * 1_000_000, limit=3) == "'yyy\u2026' (1000000 characters)"
    assert len(quote("\x00" * 1_000_000)) < 500  # escapes grow each character, not the count


def test_huge_integers_and_other_values_stay_small():
    assert quote(10**5000) == "<an integer of 16610 bits>"
    assert len(quote(list(range(10_000)))) < 150


def test_clip():
    assert clip("abc") == "abc"
    assert clip("a" * 150) == "a" * 100 + "\u2026"
