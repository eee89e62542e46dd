"""Appointments: the schedule file, free slots, and booking them in Redis (floor 3: imports core and store only)."""
