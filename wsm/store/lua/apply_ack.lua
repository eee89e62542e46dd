-- apply_ack: record a message's delivery status; acks only move forward (ERROR always applies).
-- An ack for a message not stored yet is kept for an hour and applied when the message arrives.
--
-- KEYS[1] chat msgs   hash    id -> record JSON
-- KEYS[2] early ack   string  {"status":..., "ack":...}
-- ARGV[1] message id  ARGV[2] ack (-1..4)  ARGV[3] ack name  ARGV[4] now (ms)
-- Returns "updated" | "stale" | "pending"

local raw = redis.call('HGET', KEYS[1], ARGV[1])
local ack = tonumber(ARGV[2])
if not raw then
  redis.call('SET', KEYS[2], cjson.encode({status = ARGV[3], ack = ack}), 'EX', 3600)
  return 'pending'
end
local rec = cjson.decode(raw)
local old = tonumber(rec['ack']) or -2
if rec['ack'] == cjson.null then old = -2 end
if ack ~= -1 and ack <= old then
  return 'stale'
end
rec['ack'] = ack
rec['status'] = ARGV[3]
rec['status_ms'] = tonumber(ARGV[4])
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(rec))
return 'updated'
