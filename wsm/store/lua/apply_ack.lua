-- apply_ack: record a message's delivery status; acks only move forward (ERROR always applies).
-- An ack for a message not stored yet is kept for an hour and applied when the message arrives.
--
-- KEYS[1] chat history   list    id, body pairs (_history_lib), searched from the newest
-- KEYS[2] early ack      string  {"status":..., "ack":...}
-- KEYS[3] chat seen      list    ids past the dedupe window (an id in neither is not stored)
-- ARGV[1] message id (compact, as the history holds it)  ARGV[2] ack (-1..4)  ARGV[3] ack name  ARGV[4] now (ms)
-- ARGV[5] dedupe window (records)
-- Returns "updated" | "stale" | "pending"

local index, _, rec = locate(KEYS[1], KEYS[3], ARGV[1], tonumber(ARGV[5]))
local ack = tonumber(ARGV[2])
if not index then
  redis.call('SET', KEYS[2], cjson.encode({status = ARGV[3], ack = ack}), 'EX', 3600)
  return 'pending'
end
local old = tonumber(field(rec, ACK)) or -2
if ack ~= -1 and ack <= old then
  return 'stale'
end
set_field(rec, ACK, ack)
set_field(rec, STATUS, ARGV[3])
set_field(rec, STATUS_MS, tonumber(ARGV[4]))
redis.call('LSET', KEYS[1], index + 1, cjson.encode(rec))
return 'updated'
