"""Appointments: the schedule file, availability, booking in Redis, and the push to the clinic's CalDAV calendar."""
