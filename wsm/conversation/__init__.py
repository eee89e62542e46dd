"""What the bot says: the flow file, the pure engine that follows it, and reading a chat's history.
Imports ``wsm.core`` and ``wsm.store``."""
