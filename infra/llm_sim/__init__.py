"""A stand-in for an OpenAI-compatible Chat Completions endpoint: a real HTTP server, scripted per test, or
answering as a rule-based Portuguese receptionist (``make local`` and ``make eval`` without a real model)."""
