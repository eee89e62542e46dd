"""A chat's statuses and why a conversation ended, defined once.

The Lua scripts never spell these: each is passed the names it uses as ARGV, so a misspelt
member is an AttributeError here instead of a new, silent state in Redis.
"""

from __future__ import annotations

from enum import StrEnum


class ChatStatus(StrEnum):
    """``chat:<C>:state`` field ``status``."""

    ACTIVE = "active"  # holds an attendant slot (member of ``active``)
    WAITING = "waiting"  # in the queue (member of ``queue``)
    CLOSED = "closed"  # the conversation ended; the next message opens a new one
    HANDOFF = "handoff"  # a human took over; the bot stays quiet until ``handoff_until_ms``


class EndReason(StrEnum):
    """Why a conversation ended (``Turn.end``, state field ``closed_reason``)."""

    DONE = "done"  # the flow reached an ``end: done`` step
    LEFT = "left"  # the person sent a leave word
    IDLE = "idle"  # the person stopped answering for ``WSM_IDLE_TIMEOUT_S``
    HANDOFF = "handoff"  # an ``end: handoff`` step, or a reply typed on the phone


def ended_status(reason: EndReason) -> ChatStatus:
    """The status a chat is left in when its conversation ends for ``reason``."""
    return ChatStatus.HANDOFF if reason is EndReason.HANDOFF else ChatStatus.CLOSED


# --- human attendance (console) ---------------------------------------------------------------------------


class Owner(StrEnum):
    """Who answers a chat: ``chat:<C>:state`` field ``owner`` (absent = the bot); ``operator`` names who."""

    BOT = "bot"  # the flow (and its agent) answers
    HUMAN_QUEUE = "human_queue"  # waiting for a person (member of ``human:queue``); the bot stays quiet
    WITH_OPERATOR = "with_operator"  # an operator (or the phone) answers; the bot stays quiet
    CLOSED = "closed"  # an operator closed the conversation; the next message starts afresh with the bot


TRANSITION = "transition"  # history record kind of an ownership change (beside ``tool`` records of the agent)
HUMAN_HOLD_MS = 10 * 365 * 86400 * 1000  # the bot's quiet time while a human owns a chat: "until they let go"
PHONE_OPERATOR = "phone"  # the operator name of a chat taken over by a reply typed on the phone
