"""The operators' web console: server-rendered pages, live through Server-Sent Events (functions/console)."""
