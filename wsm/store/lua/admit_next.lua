-- admit_next: move the head of the queue into a free attendant slot (pop head + claim slot, atomically).
-- The caller names the chat it saw at the head; if the head moved meanwhile, nothing changes.
--
-- KEYS[1] active  KEYS[2] queue  KEYS[3] notify due  KEYS[4] chat notify  KEYS[5] chat state  KEYS[6] ready
-- ARGV[1] chat id  ARGV[2] max active slots  ARGV[3] now (ms)  ARGV[4] events channel  ARGV[5] session
-- ARGV[6] chat status active (wsm.core.status)   ARGV[7] publish command (PUBLISH, or SPUBLISH on a cluster)
-- Returns {"admitted", queued_ms (when it joined the queue; "" if unknown)} | "full" | "moved"

if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 'full'
end
local head = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
if head ~= ARGV[1] then
  return 'moved'
end
local chat, now = ARGV[1], ARGV[3]
redis.call('ZREM', KEYS[2], chat)
redis.call('ZREM', KEYS[3], chat)
redis.call('DEL', KEYS[4])
redis.call('ZADD', KEYS[1], now, chat)
redis.call('HSET', KEYS[5], 'status', ARGV[6], 'since_ms', now, 'admitted_from_queue', '1')
redis.call('SADD', KEYS[6], chat)
redis.call(ARGV[7] or 'PUBLISH', ARGV[4], cjson.encode({type = 'chat.admitted', session = ARGV[5], chat = chat}))
redis.call(ARGV[7] or 'PUBLISH', ARGV[4], cjson.encode({type = 'queue.changed', session = ARGV[5], chat = chat}))
return {'admitted', redis.call('HGET', KEYS[5], 'queued_ms') or ''}
