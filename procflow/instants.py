"""Reading an instant written as ISO-8601 text: kept apart from the state records so that the
command line can check a `--now` argument without importing them (and pydantic)."""

from __future__ import annotations

from datetime import UTC, datetime

from procflow.errors import InstantError
from procflow.limits import INSTANT_YEAR_MAX, INSTANT_YEAR_MIN

LAST_YEAR = 9998
"""The last year an instant read from text may fall in: seconds since the epoch are a float,
and the last instants of year 9999 round up to year 10000, which no datetime holds."""


def parse_instant(text: str) -> datetime:
    """ISO-8601 text -> an aware datetime (a missing zone means UTC). ValueError when malformed
    or not writable in UTC; InstantError (a ValueError too) when procflow could not compute with
    it (after year 9998)."""
    moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    if moment.year > LAST_YEAR:
        raise InstantError(f"{text.strip()} is after year {LAST_YEAR}: {_RANGE}")
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{text} cannot be written in UTC") from None


def instant_problem(moment: datetime) -> str | None:
    """Why procflow cannot take `moment` as the time of a transition, or None: it must lie
    between the `instant_year_min` and `instant_year_max` limits, so that every due time
    computed from it (at most a `duration` later) is an instant a datetime can hold."""
    if INSTANT_YEAR_MIN.value <= moment.year <= INSTANT_YEAR_MAX.value:
        return None
    return f"{moment.isoformat()} is out of range: {_RANGE}"


_RANGE = (
    f"procflow takes instants in the years {INSTANT_YEAR_MIN.value} to {INSTANT_YEAR_MAX.value} as the time of a "
    f"transition (the `{INSTANT_YEAR_MIN.name}` and `{INSTANT_YEAR_MAX.name}` limits)"
)


def check_instant(moment: datetime, what: str = "the time") -> datetime:
    """`moment`, or InstantError when procflow cannot represent it (see `instant_problem`)."""
    if INSTANT_YEAR_MIN.value < moment.year < INSTANT_YEAR_MAX.value:
        return moment  # the usual case, at the cost of two comparisons
    problem = instant_problem(moment)
    if problem:
        raise InstantError(f"{what}: {problem}")
    return moment


__all__ = ["check_instant", "instant_problem", "parse_instant"]
