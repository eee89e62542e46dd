"""The scheduling errors: one small tree, each a refusal the caller can explain to the person."""

from __future__ import annotations

from wsm.core.errors import WsmError


class ScheduleError(WsmError):
    """The schedule file is wrong; ``problems`` lists every mistake found, not just the first."""

    def __init__(self, source: str, problems: list[str]) -> None:
        super().__init__(f"{source}: {len(problems)} problem(s):\n" + "\n".join(f"  - {p}" for p in problems))
        self.source = source
        self.problems = problems


class BookingError(WsmError):
    """Base of the refusals of :class:`wsm.schedule.book.Book`; nothing was changed."""


class SlotUnavailable(BookingError):
    """The slot is taken (held or booked by someone else, or blocked)."""


class HoldExpired(BookingError):
    """The hold ran out before it was confirmed; the slot was released."""


class NotYours(BookingError):
    """The appointment belongs to another chat."""


class LimitReached(BookingError):
    """The person already has ``max_future_per_person`` upcoming appointments."""


class UnknownAppointment(BookingError):
    """No such appointment (never existed, or expired by the retention policy)."""


class BadSlot(BookingError):
    """The slot id does not name a bookable slot (malformed, outside hours, a holiday, too soon or too far)."""


BY_NAME: dict[str, type[BookingError]] = {
    cls.__name__: cls for cls in (SlotUnavailable, HoldExpired, NotYours, LimitReached, UnknownAppointment, BadSlot)
}
