"""The clinic's CalDAV server behind two calls (put an event, delete an event), failures sorted in two kinds.

The ``caldav`` package does the WebDAV work; this module only finds (or makes) the calendar by its display
name once per process and turns the library's many exceptions into :class:`CalendarUnavailable` (the server
could not be reached or failed: try again, however long it takes) and :class:`CalendarRejected` (the server
answered and refused: a bounded number of tries, then the dead-letter list).
"""

from __future__ import annotations

import re
import threading
from urllib.parse import quote

import caldav
import requests
from caldav.lib import error as dav_error

from wsm.core.errors import WsmError


class CalendarError(WsmError):
    """The CalDAV server did not take a change."""


class CalendarUnavailable(CalendarError):
    """Connection refused, timeout or 5xx: the change stays queued and is tried again later."""


class CalendarRejected(CalendarError):
    """The server answered with a refusal (401, 403, 4xx): retried a few times, then dead-lettered."""


_STATUS = re.compile(r"\s*(\d{3})\b")


def _sorted(e: Exception, doing: str) -> CalendarError:
    if isinstance(e, requests.RequestException):
        return CalendarUnavailable(f"{doing}: {type(e).__name__}")  # the message names URLs, never a password
    if isinstance(e, dav_error.DAVError):
        reason = str(e.reason).strip().splitlines()[0] if e.reason else type(e).__name__
        found = _STATUS.match(reason)
        if found and found.group(1).startswith("5"):
            return CalendarUnavailable(f"{doing}: {reason}")
        return CalendarRejected(f"{doing}: {type(e).__name__}: {reason}")
    return CalendarRejected(f"{doing}: {type(e).__name__}: {e}")


class CalDavCalendars:
    """Calendars of one CalDAV account, by display name (made on first use when missing)."""

    def __init__(self, url: str, username: str, password: str, timeout_s: float = 10.0) -> None:
        self.url = url
        self.client = caldav.DAVClient(url, username=username or None, password=password or None, timeout=timeout_s)
        self._found: dict[str, caldav.Calendar] = {}
        self._lock = threading.Lock()

    def put(self, calendar: str, uid: str, ics: str) -> None:
        """Create or replace the event ``uid`` (PUT to ``<uid>.ics``: the same UID always lands on one resource)."""
        try:
            self._calendar(calendar).save_event(ics)
        except Exception as e:
            self._forget(calendar)
            raise _sorted(e, f"PUT {uid}") from e

    def delete(self, calendar: str, uid: str) -> None:
        """Remove the event ``uid``; one that is already gone counts as removed (404 is success)."""
        try:
            cal = self._calendar(calendar)
            href = cal.url.join(quote(uid.replace("/", "%2F")) + ".ics")  # where save_event put it
            caldav.Event(client=self.client, url=href, parent=cal).delete()
        except Exception as e:
            self._forget(calendar)
            raise _sorted(e, f"DELETE {uid}") from e

    def events(self, calendar: str) -> list[caldav.Event]:
        """Every event in the calendar (for operators and tests)."""
        try:
            return self._calendar(calendar).events()
        except Exception as e:
            raise _sorted(e, "list events") from e

    def _calendar(self, name: str) -> caldav.Calendar:
        with self._lock:
            found = self._found.get(name)
            if found is None:
                principal = self.client.principal()
                found = next((c for c in principal.calendars() if c.name == name), None)
                if found is None:
                    found = principal.make_calendar(name=name)
                self._found[name] = found
            return found

    def _forget(self, name: str) -> None:
        """After a failure look the calendar up again: it may have been deleted or the account changed."""
        with self._lock:
            self._found.pop(name, None)
