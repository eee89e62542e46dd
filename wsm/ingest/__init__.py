"""The webhook: HTTP checks (size, type, read deadline, signature), then one atomic store of the event.
Imports ``wsm.core``, ``wsm.store``, ``wsm.waha``."""
