-- owner_queue: a person asked for a human (the flow's handoff step, the agent's handoff_to_human): the chat
-- joins the human queue, the bot stays quiet (status handoff until ARGV[8]) and the notifier tells the position.
--
-- KEYS[1] chat state  KEYS[2] human queue  KEYS[3] human notify due  KEYS[4] chat notify
-- KEYS[5] chat history  KEYS[6] chat seen    KEYS[7] events stream
-- ARGV[1] chat id  ARGV[2] now (ms)  ARGV[3] history record id  ARGV[4] stream max length
-- ARGV[5] who asked (flow | agent | operator name)  ARGV[6] owner human_queue  ARGV[7] status handoff
-- ARGV[8] the bot stays quiet until (ms)
-- ARGV[last] the names the script must not spell (see _owner_lib.lua)
-- Returns {"queued", position} | {"already", owner}: a chat already with a human is left as it is

local chat, now = ARGV[1], tonumber(ARGV[2])
local owner = redis.call('HGET', KEYS[1], 'owner') or ''
local phone_lapsed = redis.call('HGET', KEYS[1], 'operator') == N.phone
  and (tonumber(redis.call('HGET', KEYS[1], 'handoff_until_ms')) or 0) <= now  -- the bot had it back already
if owner == ARGV[6] or (owner == N.with_operator and not phone_lapsed) then
  return {'already', owner}
end
owner_transition(KEYS[1], KEYS[5], KEYS[6], KEYS[7], ARGV[4], chat, now, ARGV[3], ARGV[6], '', ARGV[5])
redis.call('HSET', KEYS[1], 'status', ARGV[7], 'handoff_until_ms', ARGV[8], 'human_queued_ms', now, 'conv', '0')
redis.call('ZADD', KEYS[2], 'NX', now, chat)
redis.call('ZADD', KEYS[3], 0, chat)
redis.call('DEL', KEYS[4])
return {'queued', redis.call('ZRANK', KEYS[2], chat) + 1}
