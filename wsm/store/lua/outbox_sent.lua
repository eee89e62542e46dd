-- outbox_sent: WAHA answered for the head of a chat's outbox; pop it and record the outcome in history.
-- Sent: the reply is filed under WAHA's id; if WAHA's own echo of it (message.any, source "api") was
-- stored first, the echo is folded in. Failed for good (WAHA refused it): marked FAILED.
--
-- KEYS[1] chat lease  KEYS[2] chat outbox  KEYS[3] chat history (_history_lib)  KEYS[4] chat seen
-- KEYS[5] early ack of <waha id>  KEYS[6] events stream (the console's feed; optional)
-- ARGV[1] lease token  ARGV[2] our reply id  ARGV[3] WAHA message id, compact ("" if WAHA gave none)
-- ARGV[4] now (ms)  ARGV[5] dedupe ttl (s)  ARGV[6] "SENT" | "FAILED"
-- ARGV[7] dedupe window (records)  ARGV[8] dedupe max (ids kept in seen)
-- ARGV[9] events stream length kept (XADD MAXLEN ~)  ARGV[10] the stream's type of a message event  ARGV[11] chat
-- ARGV[12] lease length (ms)
-- With ARGV[13] = "1" and the outbox empty after the pop, the lease is given back in the same step (_release_lib):
-- KEYS[7] chat inbox  KEYS[8] ready  KEYS[9] chat state  ARGV[14] inbox length examined  ARGV[15] status waiting
-- Returns "ok" | "lost_lease" | "not_head", or "released:0" | "released:1" (1: the chat has work left)
--
-- A lease nobody holds (a Redis restart or failover forgot it, acquire_lease.lua, or it expired) is taken back
-- when what was sent is still the outbox's head: nobody else sent and popped it meanwhile, so the pop is ours, and
-- the holder keeps the chat for the rest of its outbox instead of leaving the reply to be sent a second time.

local function pop_and_record()
  local holder = redis.call('GET', KEYS[1])
  if holder and holder ~= ARGV[1] then
    return 'lost_lease'
  end
  local head = redis.call('LINDEX', KEYS[2], 0)
  if not head or cjson.decode(head)['id'] ~= ARGV[2] then
    return 'not_head'
  end
  if not holder then
    redis.set_repl(redis.REPL_NONE)  -- as every lease: not in the AOF or on replicas
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[12])
    redis.set_repl(redis.REPL_ALL)
  end
  redis.call('LPOP', KEYS[2])
  if KEYS[6] and ARGV[6] == 'SENT' then
    redis.call('XADD', KEYS[6], 'MAXLEN', '~', ARGV[9], '*', 'type', ARGV[10], 'chat', ARGV[11], 'direction', 'out')
  end

  local ours, waha_id = ARGV[2], ARGV[3]
  local window = tonumber(ARGV[7])
  local index, _, rec = locate(KEYS[3], KEYS[4], ours, window)
  if not index then
    return 'ok'  -- trimmed from history meanwhile
  end
  set_field(rec, STATUS, ARGV[6])
  set_field(rec, SENT_MS, tonumber(ARGV[4]))
  if waha_id == '' then
    redis.call('LSET', KEYS[3], index + 1, cjson.encode(rec))
    return 'ok'
  end
  set_field(rec, LOCAL_ID, ours)
  local early = redis.call('GET', KEYS[5])
  if early then
    local ack = cjson.decode(early)
    set_field(rec, STATUS, ack['status'])
    set_field(rec, ACK, ack['ack'])
    redis.call('DEL', KEYS[5])
  end
  local echo_index, _, echo = locate(KEYS[3], KEYS[4], waha_id, window)
  if echo_index then
    if field(echo, ACK) then
      set_field(rec, ACK, field(echo, ACK))
      set_field(rec, STATUS, field(echo, STATUS))
    end
    remove_pair(KEYS[3], echo_index)
    if echo_index < index then index = index - 2 end
  end
  redis.call('LSET', KEYS[3], index, waha_id)
  redis.call('LSET', KEYS[3], index + 1, cjson.encode(rec))
  if (redis.call('LLEN', KEYS[3]) - index) / 2 > window then  -- filed outside the window: remember its id
    remember_ids(KEYS[4], {waha_id}, tonumber(ARGV[8]), ARGV[5])
  end
  return 'ok'
end

local result = pop_and_record()
if ARGV[13] == '1' and result == 'ok' and redis.call('LLEN', KEYS[2]) == 0 then
  return 'released:' .. release(KEYS[1], KEYS[7], KEYS[2], KEYS[8], KEYS[9], ARGV[1], ARGV[11], ARGV[14], ARGV[15])
end
return result
