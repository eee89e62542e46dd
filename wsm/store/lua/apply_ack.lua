-- apply_ack: record a message's delivery status; acks only move forward (ERROR always applies).
-- An ack for a message not stored yet is kept for an hour and applied when the message arrives.
-- Unordered mode (ARGV[6] "1", the Cloud API, whose statuses may arrive in any order and may say both
-- delivered and failed for one message): ERROR ranks between SERVER and DEVICE, so a delivery or read
-- wins over a failure whichever came first, a failure wins over "sent", and the end state never depends
-- on the order; the failure's reason (ARGV[7]) is kept on the message (its extras) either way.
--
-- KEYS[1] chat history   list    id, body pairs (_history_lib), searched from the newest
-- KEYS[2] early ack      string  {"status":..., "ack":...}
-- KEYS[3] chat seen      list    ids past the dedupe window (an id in neither is not stored)
-- ARGV[1] message id (compact, as the history holds it)  ARGV[2] ack (-1..4)  ARGV[3] ack name  ARGV[4] now (ms)
-- ARGV[5] dedupe window (records)   ARGV[6] "1" unordered mode, else "0" (or absent)
-- ARGV[7] error text ("" or absent)
-- Returns "updated" | "stale" | "pending"

local EXTRAS = 13  -- the body's trailing object of other fields (wsm/store/record_codec.py)
local index, _, rec = locate(KEYS[1], KEYS[3], ARGV[1], tonumber(ARGV[5]))
local ack = tonumber(ARGV[2])
local unordered = ARGV[6] == '1'
local error_text = ARGV[7] or ''
local function rank(value)
  if unordered and value == -1 then return 1.5 end
  return value
end
if not index then
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
local old = tonumber(field(rec, ACK)) or -2
if error_text ~= '' then
  local extras = field(rec, EXTRAS)
  if type(extras) ~= 'table' then extras = {} end
  extras['error'] = error_text
  set_field(rec, EXTRAS, extras)
end
if unordered then
  if rank(ack) <= rank(old) then
    if error_text ~= '' then redis.call('LSET', KEYS[1], index + 1, cjson.encode(rec)) end
    return 'stale'
  end
elseif ack ~= -1 and ack <= old then
  return 'stale'
end
set_field(rec, ACK, ack)
set_field(rec, STATUS, ARGV[3])
set_field(rec, STATUS_MS, tonumber(ARGV[4]))
redis.call('LSET', KEYS[1], index + 1, cjson.encode(rec))
return 'updated'
