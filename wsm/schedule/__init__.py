"""Appointments: the schedule file, free slots, booking them in Redis, the push to the clinic's CalDAV calendar."""
