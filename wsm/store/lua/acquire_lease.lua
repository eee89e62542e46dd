-- acquire_lease: take a chat's lease under the caller's token and, if taken, read what the holder needs.
-- One round trip instead of two (lease, read) on the worker's hot path; the sizes of the session's active
-- set and queue come along, so the worker asks for admission only when someone waits and a slot may be free.
--
-- The lease is not propagated to the AOF or to replicas (REPL_NONE): this script then writes nothing to the AOF,
-- so its answer does not wait for an fsync. (A snapshot, an AOF rewrite or a full resync still copies the key as
-- it stands: harmless, it comes back with its token and its expiry.) A lease lost in a restart or a failover is
-- a lease expired early: every write of its holder checks the token first (commit_turn, heartbeat_lease,
-- release) and fails, and whoever takes the chat next reads what was committed; outbox_sent takes a lease nobody
-- holds back when the reply it pops is still the head. The token is the caller's random one, so a lease a
-- restart forgot cannot be confused with the next one (a counter here would restart from the AOF's value).
--
-- KEYS[1] chat lease  KEYS[2] chat state  KEYS[3] chat inbox  KEYS[4] active  KEYS[5] queue
-- ARGV[1] lease token (random)  ARGV[2] lease length (ms)
-- Returns false when another handler holds the chat,
-- else {state as a flat list, inbox entries, chats active, chats queued}

redis.set_repl(redis.REPL_NONE)
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return false
end
return {
  redis.call('HGETALL', KEYS[2]), redis.call('LRANGE', KEYS[3], 0, -1),
  redis.call('ZCARD', KEYS[4]), redis.call('ZCARD', KEYS[5]),
}
