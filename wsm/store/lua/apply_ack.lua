-- apply_ack: record a message's delivery status; acks only move forward (ERROR always applies).
-- An ack for a message not stored yet is kept for an hour and applied when the message arrives.
--
-- KEYS[1] chat history   list    compact record JSON (_history_lib), searched from the newest
-- KEYS[2] early ack      string  {"status":..., "ack":...}
-- ARGV[1] message id  ARGV[2] ack (-1..4)  ARGV[3] ack name  ARGV[4] now (ms)
-- Returns "updated" | "stale" | "pending"

local index, _, rec = find_record(KEYS[1], ARGV[1], 0)
local ack = tonumber(ARGV[2])
if not index then
  redis.call('SET', KEYS[2], cjson.encode({status = ARGV[3], ack = ack}), 'EX', 3600)
  return 'pending'
end
local old = tonumber(rec['a']) or -2
if rec['a'] == cjson.null then old = -2 end
if ack ~= -1 and ack <= old then
  return 'stale'
end
rec['a'] = ack
rec['s'] = ARGV[3]
rec['M'] = tonumber(ARGV[4])
redis.call('LSET', KEYS[1], index, cjson.encode(rec))
return 'updated'
