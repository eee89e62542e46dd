"""Getting replies out: the outbox sender (anti-ban pacing, retries, session hold) and the dead-letter list.
Imports ``wsm.core``, ``wsm.store``, ``wsm.waha``."""
