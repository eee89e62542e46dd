-- apply_ack: record a message's delivery status; acks only move forward (ERROR always applies).
-- An ack for a message not stored yet is kept for an hour and applied when the message arrives.
-- Unordered mode (ARGV[5] "1", the Cloud API, whose statuses may arrive in any order and may say both
-- delivered and failed for one message): ERROR ranks between SERVER and DEVICE, so a delivery or read
-- wins over a failure whichever came first, a failure wins over "sent", and the end state never depends
-- on the order; the failure's reason (ARGV[6]) is kept on the message either way.
--
-- KEYS[1] chat msgs   hash    id -> record JSON
-- KEYS[2] early ack   string  {"status":..., "ack":...}
-- ARGV[1] message id  ARGV[2] ack (-1..4)  ARGV[3] ack name  ARGV[4] now (ms)
-- ARGV[5] "1" unordered mode, else "0" (or absent)   ARGV[6] error text ("" or absent)
-- Returns "updated" | "stale" | "pending"

local raw = redis.call('HGET', KEYS[1], ARGV[1])
local ack = tonumber(ARGV[2])
local unordered = ARGV[5] == '1'
local error_text = ARGV[6] or ''
local function rank(value)
  if unordered and value == -1 then return 1.5 end
  return value
end
if not raw then
  local early = redis.call('GET', KEYS[2])
  if unordered and early then
    local prev = cjson.decode(early)
    if rank(tonumber(prev['ack']) or -2) >= rank(ack) then
      return 'pending'
    end
  end
  redis.call('SET', KEYS[2], cjson.encode({status = ARGV[3], ack = ack}), 'EX', 3600)
  return 'pending'
end
local rec = cjson.decode(raw)
local old = tonumber(rec['ack']) or -2
if rec['ack'] == cjson.null then old = -2 end
if error_text ~= '' then
  rec['error'] = error_text
end
if unordered then
  if rank(ack) <= rank(old) then
    if error_text ~= '' then redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(rec)) end
    return 'stale'
  end
elseif ack ~= -1 and ack <= old then
  return 'stale'
end
rec['ack'] = ack
rec['status'] = ARGV[3]
rec['status_ms'] = tonumber(ARGV[4])
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(rec))
return 'updated'
