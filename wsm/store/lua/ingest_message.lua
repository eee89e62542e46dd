-- ingest_message: store one WAHA message exactly once, and route an inbound one to a slot or the queue.
-- All-or-nothing: the id is known (history, seen) only once the record is stored, by this same script.
--
-- KEYS[1]  seen:<message id>   string  the old layout's dedupe marker (read only; it expires)
-- KEYS[2]  chat history        list    id, body, id, body... oldest first (_history_lib)
-- KEYS[3]  chat seen           list    ids that left the history's dedupe window
-- KEYS[4]  chat inbox          list    [id, *body] of unhandled inbound messages
-- KEYS[5]  chat state          hash
-- KEYS[6]  ready               set     chats with work for the worker
-- KEYS[7]  active              zset    chats holding a slot (score = last activity ms)
-- KEYS[8]  queue               zset    waiting chats (score = ticket)
-- KEYS[9]  queue seq           string  ticket counter
-- KEYS[10] notify due          zset    waiting chats, score = ms when they may be told again
-- KEYS[11] early ack           string  ack that arrived before this message
-- KEYS[12] events stream        stream  the console's live feed (optional: without it, no event)
-- ARGV[1] message id (compact)   ARGV[2] record body (compact JSON array)   ARGV[3] direction "in" | "out"
-- ARGV[4] now (ms)     ARGV[5] dedupe ttl (s) ARGV[6] history max (messages)
-- ARGV[7] max active slots   ARGV[8] chat id   ARGV[9] session   ARGV[10] events channel
-- ARGV[11] state retention (s)   ARGV[12] inbox max (messages)   ARGV[13] handoff length (ms)
-- ARGV[14] "1" when this outbound message was typed on the phone (WAHA source "app"), else "0"
-- ARGV[15..17] chat statuses active, waiting, handoff   ARGV[18] end reason handoff  (wsm.core.status)
-- ARGV[19] dedupe window (records)   ARGV[20] dedupe max (ids kept in seen)
-- ARGV[21] publish command: PUBLISH, or SPUBLISH on a cluster (ARGV[10] is then the session's shard channel)
-- ARGV[22] events stream length kept (XADD MAXLEN ~)   ARGV[23] the stream's type of a message event
-- An outbound message typed on the phone means a human took over the chat: the bot
-- hands off (frees the slot or the queue place and stays quiet for the handoff length).
-- Returns {"duplicate"} | {"stored_out"} | {"accepted", chat status, queue position or 0}

local window = tonumber(ARGV[19])
if redis.call('EXISTS', KEYS[1]) == 1 or is_known(KEYS[2], KEYS[3], ARGV[1], window) then
  return {'duplicate'}
end

local id, body, now, chat = ARGV[1], ARGV[2], tonumber(ARGV[4]), ARGV[8]
local ACTIVE, WAITING, HANDOFF, ENDED_BY_HANDOFF = ARGV[15], ARGV[16], ARGV[17], ARGV[18]
local early = redis.call('GET', KEYS[11])
if early then
  local rec = cjson.decode(body)
  local ack = cjson.decode(early)
  set_field(rec, STATUS, ack['status'])
  set_field(rec, ACK, ack['ack'])
  body = cjson.encode(rec)
  redis.call('DEL', KEYS[11])
end

local retention = ARGV[11]
redis.call('RPUSH', KEYS[2], id, body)
appended(KEYS[2], KEYS[3], 1, window, tonumber(ARGV[6]), tonumber(ARGV[20]), ARGV[5], retention)
if ARGV[3] == 'out' then
  redis.call('HSET', KEYS[5], 'last_out_ms', now)
  if ARGV[14] == '1' then
    redis.call('HSET', KEYS[5], 'human_reply_ms', now, 'status', HANDOFF, 'conv', '0',
      'handoff_until_ms', now + tonumber(ARGV[13]), 'closed_reason', ENDED_BY_HANDOFF)
    local freed = redis.call('ZREM', KEYS[7], chat) + redis.call('ZREM', KEYS[8], chat)
    redis.call('ZREM', KEYS[10], chat)
    if freed > 0 then  -- the worker admits the bot queue's head, the notifier tells who moved up
      redis.call(ARGV[21] or 'PUBLISH', ARGV[10], cjson.encode({type = 'slot.freed', session = ARGV[9], chat = chat}))
    end
  end
  redis.call('EXPIRE', KEYS[5], retention)
  return {'stored_out'}
end

redis.call('HSET', KEYS[5], 'last_seen_ms', now)
redis.call('EXPIRE', KEYS[5], retention)
if KEYS[12] then
  redis.call('XADD', KEYS[12], 'MAXLEN', '~', ARGV[22], '*', 'type', ARGV[23], 'chat', chat, 'direction', 'in')
end
local status = redis.call('HGET', KEYS[5], 'status')
if status == HANDOFF and (tonumber(redis.call('HGET', KEYS[5], 'handoff_until_ms')) or 0) > now then
  return {'accepted', status, 0}  -- a human is answering this chat: history only, the bot stays quiet
end

local record = '[' .. cjson.encode(id) .. ']'  -- the inbox's one-element form: [id, *body]
if body ~= '[]' then record = '[' .. cjson.encode(id) .. ',' .. string.sub(body, 2) end
redis.call('RPUSH', KEYS[4], record)
redis.call('LTRIM', KEYS[4], -tonumber(ARGV[12]), -1)
local event, position = 'message.received', 0
if status == ACTIVE then
  redis.call('ZADD', KEYS[7], 'XX', now, chat)
  redis.call('SADD', KEYS[6], chat)
elseif status == WAITING then
  redis.call('SADD', KEYS[6], chat)
  position = redis.call('ZRANK', KEYS[8], chat)
  position = position and position + 1 or 0
elseif redis.call('ZCARD', KEYS[7]) < tonumber(ARGV[7]) then
  status = ACTIVE
  redis.call('ZADD', KEYS[7], now, chat)
  redis.call('HSET', KEYS[5], 'status', status, 'since_ms', now)
  redis.call('SADD', KEYS[6], chat)
else
  status = WAITING
  local ticket = redis.call('INCR', KEYS[9])
  redis.call('ZADD', KEYS[8], ticket, chat)
  redis.call('ZADD', KEYS[10], 0, chat)
  redis.call('HSET', KEYS[5], 'status', status, 'queued_ms', now)
  position = redis.call('ZRANK', KEYS[8], chat) + 1
  event = 'queue.changed'
end

redis.call(ARGV[21] or 'PUBLISH', ARGV[10], cjson.encode({type = event, session = ARGV[9], chat = chat}))
return {'accepted', status, position}
