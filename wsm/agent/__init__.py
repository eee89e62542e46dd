"""The AI agent behind a flow's ``agent`` step: a language model proposes through our tools, the server decides.

llm.py (any OpenAI-compatible Chat Completions endpoint, retries within a deadline), prompt.py (what the
model sees: instructions, business facts, now, the person's state, role-separated history under a token
budget), tools.py (the tool schemas and their server-side checks), runner.py (one turn: model ↔ tools,
limits, fallback). It stands on the schedule (the booking core) and the conversation's booking talk, whose
confirmation the engine asks; it never commits a booking itself. Floor: beside conversation and schedule.
"""
