"""The platform, emulated on one machine: event router, WAHA simulator, embedded Redis, ``make local``."""
