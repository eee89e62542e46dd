-- session_status: store the WAHA session's status and when it last changed.
-- When it becomes WORKING, lift the hold on sends and publish a tick so held replies go out at once.
--
-- KEYS[1] session  hash  status, changed_ms, updated_ms, event_ms, held_ms (sends on hold since)
-- ARGV[1] status   ARGV[2] now (ms)   ARGV[3] event timestamp (ms)   ARGV[4] events channel   ARGV[5] session
-- ARGV[6] publish command (PUBLISH, or SPUBLISH on a cluster)
-- Returns the previous status or false

local previous = redis.call('HGET', KEYS[1], 'status')
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'updated_ms', ARGV[2], 'event_ms', ARGV[3])
if previous ~= ARGV[1] then
  redis.call('HSET', KEYS[1], 'changed_ms', ARGV[2])
  if ARGV[1] == 'WORKING' then
    redis.call('HDEL', KEYS[1], 'held_ms')
    redis.call(ARGV[6] or 'PUBLISH', ARGV[4], cjson.encode({type = 'tick', session = ARGV[5]}))
  end
end
return previous
