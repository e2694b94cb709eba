"""The one rule for a whole number a user gives (a count, a seed): an int, not a bool (True
is an int in Python, and a mistake where a count is meant), within its range. Every flag
and API argument that counts something or seeds something is checked here, so the CLI and
the Python API refuse it with the same line."""

from __future__ import annotations

import numbers

from gankit.errors import UserError


def problem(value, low: int = 1, high: int | None = None, why: str = "") -> str | None:
    """What is wrong with `value` as a whole number from `low` to `high` (None: no top), as
    "must be ...`why`, got ...", or None when nothing is: the rule, for whoever says it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low \
            or (high is not None and value > high):
        if low == 1:
            wanted = "a positive whole number" + (f" (at most {high})" if high is not None else "")
        else:
            wanted = f"a whole number from {low}" + (f" to {high}" if high is not None else " up")
        return f"must be {wanted}{why}, got {value!r:.30}"
    return None


def whole_number(value, name: str, low: int = 1, high: int | None = None, why: str = "") -> int:
    """`value` as an int when it is a whole number from `low` to `high`, else the one-line
    UserError naming `name` (a flag, "--n", or an argument, "n"), and `why`."""
    wrong = problem(value, low, high, why)
    if wrong:
        raise UserError(f"{name} {wrong}")
    return int(value)
