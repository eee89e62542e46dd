-- owner_take: an operator takes a chat (the next in the human queue, one they chose, or one a supervisor
-- assigns them): only while they are online and below their capacity. A chat the bot held gives up its slot.
--
-- KEYS[1] chat state  KEYS[2] human queue  KEYS[3] human notify due  KEYS[4] chat notify
-- KEYS[5] chat history  KEYS[6] chat seen    KEYS[7] events stream     KEYS[8] operators online
-- KEYS[9] operators load  KEYS[10] active (bot slots)  KEYS[11] bot queue  KEYS[12] bot notify due
-- KEYS[13] human handle stats
-- ARGV[1] chat id  ARGV[2] now (ms)  ARGV[3] history record id  ARGV[4] stream max length
-- ARGV[5] operator  ARGV[6] who did it  ARGV[7] owner with_operator  ARGV[8] status handoff
-- ARGV[9] the bot stays quiet until (ms)  ARGV[10] events channel  ARGV[11] session
-- ARGV[12] the publish command (PUBLISH, or SPUBLISH on a cluster: wsm.store.doorbells)
-- ARGV[13] "1": take the chat only if it is in the human queue (the next in it: another may have taken it since)
-- ARGV[last] the names the script must not spell (see _owner_lib.lua)
-- Returns {"taken", ms waited in the human queue or -1} | {"offline"} | {"full"} | {"already"} | {"gone"}

local chat, now, operator = ARGV[1], tonumber(ARGV[2]), ARGV[5]
local capacity = tonumber(redis.call('ZSCORE', KEYS[8], operator) or '')
if not capacity then
  return {'offline'}
end
if redis.call('HGET', KEYS[1], 'owner') == ARGV[7] and redis.call('HGET', KEYS[1], 'operator') == operator then
  return {'already'}
end
if tonumber(redis.call('HGET', KEYS[9], operator) or '0') >= capacity then
  return {'full'}
end
local queued = redis.call('ZSCORE', KEYS[2], chat)
if ARGV[13] == '1' and not queued then
  return {'gone'}
end
owner_let_go(KEYS[1], KEYS[9], KEYS[13], now)
owner_transition(KEYS[1], KEYS[5], KEYS[6], KEYS[7], ARGV[4], chat, now, ARGV[3], ARGV[7], operator, ARGV[6])
redis.call('HINCRBY', KEYS[9], operator, 1)
redis.call('HSET', KEYS[1], 'status', ARGV[8], 'handoff_until_ms', ARGV[9], 'conv', '0', 'leave_message', '')
redis.call('ZREM', KEYS[2], chat)
redis.call('ZREM', KEYS[3], chat)
redis.call('DEL', KEYS[4])
local freed = redis.call('ZREM', KEYS[10], chat) + redis.call('ZREM', KEYS[11], chat)
redis.call('ZREM', KEYS[12], chat)
if freed > 0 then  -- the worker admits the bot queue's head, the notifier tells who moved up
  redis.call(ARGV[12], ARGV[10], cjson.encode({type = 'slot.freed', session = ARGV[11], chat = chat}))
end
return {'taken', queued and (now - tonumber(queued)) or -1}
