"""Every atomic Redis operation is a Lua file in ``wsm/store/lua/``; this module loads them.

redis-py's ``register_script`` runs EVALSHA and re-loads the script after a
``SCRIPT FLUSH`` or a Redis restart, so callers just call the script.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

import redis
from redis.commands.core import Script

NAMES = (
    "ingest_message",
    "apply_ack",
    "session_status",
    "commit_turn",
    "admit_next",
    "release_lease",
    "outbox_sent",
    "heartbeat_lease",
    "acquire_lease",
    "schedule_hold",
    "schedule_confirm",
    "schedule_cancel",
    "schedule_reschedule",
    "schedule_block",
    "schedule_expire",
    "schedule_waitlist",
    "schedule_erase",
    "calendar_lock",
    "merge_chat",
    "migrate_chat",
    "owner_queue",
    "owner_take",
    "owner_return",
    "owner_close",
    "owner_phone",
)
SCHEDULE_LIB = "_schedule_lib"  # shared helpers put in front of every schedule_*.lua
HISTORY_LIB = "_history_lib"  # the history list and dedupe helpers, put in front of the scripts that use them
HISTORY_USERS = ("ingest_message", "commit_turn", "apply_ack", "outbox_sent", "migrate_chat", "merge_chat")
OWNER_LIB = "_owner_lib"  # shared helpers put in front of every owner_*.lua (human attendance)
RELEASE_LIB = "_release_lib"  # giving a lease back, put in front of the scripts that do
RELEASE_USERS = ("release_lease", "outbox_sent")


@cache
def _source(name: str) -> str:
    text = resources.files("wsm.store").joinpath("lua", f"{name}.lua").read_text()
    if name in RELEASE_USERS:
        text = _source(RELEASE_LIB) + "\n" + text
    if name.startswith("schedule_"):
        return _source(SCHEDULE_LIB) + "\n" + text
    if name in HISTORY_USERS:
        return _source(HISTORY_LIB) + "\n" + text
    if name.startswith("owner_"):  # a transition is a history record too
        return _source(HISTORY_LIB) + "\n" + _source(OWNER_LIB) + "\n" + text
    return text


class Scripts:
    """The project's Lua scripts bound to one client; attribute per script name."""

    def __init__(self, client: redis.Redis) -> None:
        for name in NAMES:
            setattr(self, name, client.register_script(_source(name)))

    ingest_message: Script
    apply_ack: Script
    session_status: Script
    commit_turn: Script
    admit_next: Script
    release_lease: Script
    outbox_sent: Script
    heartbeat_lease: Script
    acquire_lease: Script
    schedule_hold: Script
    schedule_confirm: Script
    schedule_cancel: Script
    schedule_reschedule: Script
    schedule_block: Script
    schedule_expire: Script
    schedule_waitlist: Script
    schedule_erase: Script
    calendar_lock: Script
    merge_chat: Script
    migrate_chat: Script
    owner_queue: Script
    owner_take: Script
    owner_return: Script
    owner_close: Script
    owner_phone: Script
