"""Redis as the truth: the key schema, every atomic step as a Lua script, the connection, group commit,
wake-up events, and one chat's lease and unit of work. Imports only ``wsm.core``."""
