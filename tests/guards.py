"""Proof, kept beside a check, that it can fail: it passes with its guard, and fails without.

A check that still passes once the guard it claims to test is patched away tests something
else (or nothing). ``fails_without`` runs a check as is, then with the guard removed, and
returns the failure it then raises.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

FAILURES = (AssertionError, pytest.fail.Exception)
"""What a failing check raises: an assert, or pytest.raises' "DID NOT RAISE"."""


def fails_without(
    check: Callable[[], object], remove_guard: Callable[[], object], *, passes_first: bool = True
) -> str:
    """The message ``check`` fails with once ``remove_guard()`` ran; it must pass before.

    ``passes_first=False`` skips the run as is, for a check that is a test of its own already.
    """
    if passes_first:
        check()
    remove_guard()
    try:
        check()
    except FAILURES as failure:
        return str(failure)
    except BaseExceptionGroup as group:  # hypothesis, when it finds more than one failing example
        failed, other = group.split(FAILURES)
        if failed is None or other is not None:
            raise
        return str(failed.exceptions[0])
    raise AssertionError("the check still passes without its guard: it cannot catch a leak")
