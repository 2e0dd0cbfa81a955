"""Reading an instant written as ISO-8601 text: kept apart from the state records so that the
command line can check a `--now` argument without importing them (and pydantic)."""

from __future__ import annotations

from datetime import UTC, datetime


def parse_instant(text: str) -> datetime:
    """ISO-8601 text -> an aware datetime (a missing zone means UTC). ValueError when malformed."""
    moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


__all__ = ["parse_instant"]
