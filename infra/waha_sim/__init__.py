"""A WAHA stand-in that is a real HTTP server: its behaviour (core), HTTP and the chat page (web, page.html),
and the payloads it and the tests build."""
