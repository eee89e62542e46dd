-- commit_turn: apply what one handler decided for a chat, all at once, only while it holds the chat's lease.
-- Used by the worker (a conversation turn, leaving the queue, an idle close) and the notifier (a position notice).
--
-- KEYS[1] chat lease   KEYS[2] chat inbox    KEYS[3] chat state   KEYS[4] chat outbox
-- KEYS[5] chat history KEYS[6] chat seen     KEYS[7] ready        KEYS[8] active
-- KEYS[9] queue        KEYS[10] notify due   KEYS[11] chat notify KEYS[12] handle stats
-- ARGV[1] lease token
-- ARGV[2] number of inbox messages handled (removed from the head of the inbox)
-- ARGV[3] state fields to set, JSON object of strings
-- ARGV[4] replies, JSON array of {"id": compact id, "entry": outbox JSON string, "record": history body};
--         an "entry" of "" is a history-only record (an agent's tool call), not sent
-- ARGV[5] now (ms)     ARGV[6] history max   ARGV[7] retention (s)
-- ARGV[8] end reason, "" for none (wsm.core.status.EndReason; frees the slot / leaves the queue)
-- ARGV[9] chat id      ARGV[10] session      ARGV[11] events channel
-- ARGV[12] notify fields to set, JSON object of strings ("" for none)
-- ARGV[13] notify due score (ms) to set, "" to leave as is
-- ARGV[14] max active slots
-- ARGV[15] turn id: a repeated call with the same id (a client retry after a lost reply) changes nothing
-- ARGV[16] status the chat is left in when it ends for that reason (closed | handoff; "" with no end)
-- ARGV[17..19] chat statuses closed, active, waiting  (wsm.core.status)
-- KEYS[13] queue seq
-- KEYS[14] a due set (zset) the reply was due from, e.g. reminders:due or waitlist:offers
-- KEYS[15] a zset to note the reply in once sent, e.g. waitlist:sent (pass an unanswered offer on)
-- ARGV[20] member of KEYS[14] this reply answers ("" for none): if it is gone (the appointment was
--          cancelled or moved, or another sender took it), nothing is done and "gone" is returned;
--          else it is removed in this same step, so the reply is queued exactly once
-- ARGV[21] member to add to KEYS[15] ("" for none)   ARGV[22] its score
-- ARGV[23] dedupe window (records)  ARGV[24] dedupe max (ids kept in seen)  ARGV[25] dedupe ttl (s)
-- ARGV[26] publish command: PUBLISH, or SPUBLISH on a cluster (ARGV[11] is then the session's shard channel)
-- KEYS[16] the queue a position notice is about (the bot's queue or the human queue)
-- ARGV[27] the position a notice tells ("" for any other commit)  ARGV[28] the last told position its
--          sender read in KEYS[11] ("0": never told). The notifier holds the lease, but admission and an
--          operator's take move a chat without it: if the chat is no longer at that place of KEYS[16], or
--          was told something else meanwhile, the notice is stale and nothing is done ("moved").
-- KEYS[17] the session's status hash  With it, a commit returns what the sender reads next, saving it a round trip:
--          {"ok", 1 if the session's sends are held else 0, the chat's send_retry_at_ms or "", outbox entries...}
-- When a conversation ends while newer messages wait in the inbox (they arrived after the handler
-- read it), the chat is routed again as ingest would: a free slot if nobody waits, else the queue's tail.
-- Returns "ok" (or the list above) | "lost_lease" | "gone" | "moved"

if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 'lost_lease'
end
if redis.call('HGET', KEYS[3], 'last_turn') == ARGV[15] then
  return 'ok'
end
if ARGV[27] ~= '' then
  local rank = redis.call('ZRANK', KEYS[16], ARGV[9])
  if not rank or rank + 1 ~= tonumber(ARGV[27]) or (redis.call('HGET', KEYS[11], 'position') or '0') ~= ARGV[28] then
    return 'moved'
  end
end
if ARGV[20] ~= '' and redis.call('ZREM', KEYS[14], ARGV[20]) == 0 then
  return 'gone'
end
if ARGV[21] ~= '' then
  redis.call('ZADD', KEYS[15], tonumber(ARGV[22]), ARGV[21])
end
redis.call('HSET', KEYS[3], 'last_turn', ARGV[15])
local now, chat, retention = tonumber(ARGV[5]), ARGV[9], ARGV[7]
local CLOSED, ACTIVE, WAITING = ARGV[17], ARGV[18], ARGV[19]

local handled = tonumber(ARGV[2])
if handled > 0 then
  redis.call('LTRIM', KEYS[2], handled, -1)
end

for field, value in pairs(cjson.decode(ARGV[3])) do
  redis.call('HSET', KEYS[3], field, value)
end

local replies = cjson.decode(ARGV[4])
for _, reply in ipairs(replies) do
  if reply['entry'] ~= '' then
    redis.call('RPUSH', KEYS[4], reply['entry'])
  end
  redis.call('RPUSH', KEYS[5], reply['id'], reply['record'])
end
if #replies > 0 then
  appended(KEYS[5], KEYS[6], #replies, tonumber(ARGV[23]), tonumber(ARGV[6]), tonumber(ARGV[24]), ARGV[25], retention)
  redis.call('SADD', KEYS[7], chat)
end

if ARGV[12] ~= '' then
  for field, value in pairs(cjson.decode(ARGV[12])) do
    redis.call('HSET', KEYS[11], field, value)
  end
  redis.call('EXPIRE', KEYS[11], 86400)
end
if ARGV[13] ~= '' then
  redis.call('ZADD', KEYS[10], 'XX', tonumber(ARGV[13]), chat)
end

local reason = ARGV[8]
if reason ~= '' then
  if redis.call('ZREM', KEYS[8], chat) == 1 then
    local since = tonumber(redis.call('HGET', KEYS[3], 'since_ms'))
    if since then
      redis.call('LPUSH', KEYS[12], now - since)
      redis.call('LTRIM', KEYS[12], 0, 49)
    end
  end
  redis.call('ZREM', KEYS[9], chat)
  redis.call('ZREM', KEYS[10], chat)
  redis.call('DEL', KEYS[11])
  local status = ARGV[16]
  redis.call('HSET', KEYS[3], 'status', status, 'closed_reason', reason, 'closed_ms', now)
  if status == CLOSED and redis.call('LLEN', KEYS[2]) > 0 then
    if redis.call('ZCARD', KEYS[9]) == 0 and redis.call('ZCARD', KEYS[8]) < tonumber(ARGV[14]) then
      redis.call('ZADD', KEYS[8], now, chat)
      redis.call('HSET', KEYS[3], 'status', ACTIVE, 'since_ms', now)
      redis.call('SADD', KEYS[7], chat)
    else
      redis.call('ZADD', KEYS[9], redis.call('INCR', KEYS[13]), chat)
      redis.call('ZADD', KEYS[10], 0, chat)
      redis.call('HSET', KEYS[3], 'status', WAITING, 'queued_ms', now)
    end
  end
  redis.call(ARGV[26] or 'PUBLISH', ARGV[11], cjson.encode({type = 'queue.changed', session = ARGV[10], chat = chat}))
end
redis.call('EXPIRE', KEYS[3], retention)
if KEYS[17] then
  local view = {'ok', redis.call('HEXISTS', KEYS[17], 'held_ms'), redis.call('HGET', KEYS[3], 'send_retry_at_ms') or ''}
  for _, entry in ipairs(redis.call('LRANGE', KEYS[4], 0, -1)) do
    view[#view + 1] = entry
  end
  return view
end
return 'ok'
