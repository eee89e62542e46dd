-- acquire_lease: take a chat's lease with a new fencing token and, if taken, read what the holder needs.
-- One round trip instead of three (token, lease, read) on the worker's hot path; the sizes of the session's active
-- set and queue come along, so the worker asks for admission only when someone waits and a slot may be free.
--
-- KEYS[1] fence (token counter)  KEYS[2] chat lease  KEYS[3] chat state  KEYS[4] chat inbox
-- KEYS[5] active  KEYS[6] queue
-- ARGV[1] lease length (ms)
-- Returns false when another handler holds the chat,
-- else {token, state as a flat list, inbox entries, chats active, chats queued}

local token = redis.call('INCR', KEYS[1])
if not redis.call('SET', KEYS[2], token, 'NX', 'PX', ARGV[1]) then
  return false
end
return {
  tostring(token), redis.call('HGETALL', KEYS[3]), redis.call('LRANGE', KEYS[4], 0, -1),
  redis.call('ZCARD', KEYS[5]), redis.call('ZCARD', KEYS[6]),
}
