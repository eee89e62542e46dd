-- outbox_sent: WAHA answered for the head of a chat's outbox; pop it and record the outcome in history.
-- Sent: the reply is filed under WAHA's id; if WAHA's own echo of it (message.any, source "api") was
-- stored first, the echo is folded in. Failed for good (WAHA refused it): marked FAILED.
--
-- KEYS[1] chat lease  KEYS[2] chat outbox  KEYS[3] chat log  KEYS[4] chat msgs
-- KEYS[5] seen:<waha id>  KEYS[6] early ack of <waha id>
-- ARGV[1] lease token  ARGV[2] our reply id  ARGV[3] WAHA message id ("" if WAHA gave none)
-- ARGV[4] now (ms)  ARGV[5] dedupe ttl (s)  ARGV[6] "SENT" | "FAILED"
-- Returns "ok" | "lost_lease" | "not_head"

if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 'lost_lease'
end
local head = redis.call('LINDEX', KEYS[2], 0)
if not head or cjson.decode(head)['id'] ~= ARGV[2] then
  return 'not_head'
end
redis.call('LPOP', KEYS[2])

local ours, waha_id = ARGV[2], ARGV[3]
local raw = redis.call('HGET', KEYS[4], ours)
if not raw then
  return 'ok'  -- trimmed from history meanwhile
end
local rec = cjson.decode(raw)
rec['status'] = ARGV[6]
rec['sent_ms'] = tonumber(ARGV[4])
if waha_id == '' then
  redis.call('HSET', KEYS[4], ours, cjson.encode(rec))
  return 'ok'
end
rec['id'] = waha_id
rec['local_id'] = ours
local early = redis.call('GET', KEYS[6])
if early then
  local ack = cjson.decode(early)
  rec['status'] = ack['status']
  rec['ack'] = ack['ack']
  redis.call('DEL', KEYS[6])
end
if not redis.call('SET', KEYS[5], '1', 'NX', 'EX', ARGV[5]) then
  local echo = redis.call('HGET', KEYS[4], waha_id)
  if echo then
    local e = cjson.decode(echo)
    if e['ack'] and e['ack'] ~= cjson.null then
      rec['ack'] = e['ack']
      rec['status'] = e['status']
    end
  end
  redis.call('LREM', KEYS[3], 1, waha_id)
end
local position = redis.call('LPOS', KEYS[3], ours, 'RANK', -1)
if position then
  redis.call('LSET', KEYS[3], position, waha_id)
end
redis.call('HDEL', KEYS[4], ours)
redis.call('HSET', KEYS[4], waha_id, cjson.encode(rec))
return 'ok'
