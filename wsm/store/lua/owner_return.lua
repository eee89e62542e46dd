-- owner_return: "devolver ao bot": the flow answers the chat's next message at the step the operator chose.
-- The chat is left closed with its conversation open at that step, so the next message takes a slot (or
-- the bot queue) as any message does and the engine continues there.
--
-- KEYS[1] chat state  KEYS[2] human queue  KEYS[3] human notify due  KEYS[4] chat history  KEYS[5] chat seen
-- KEYS[6] events stream  KEYS[7] operators load  KEYS[8] human handle stats
-- ARGV[1] chat id  ARGV[2] now (ms)  ARGV[3] history record id  ARGV[4] stream max length
-- ARGV[5] who did it  ARGV[6] step  ARGV[7] owner bot  ARGV[8] status closed
-- ARGV[last] the names the script must not spell (see _owner_lib.lua)
-- Returns "ok" | "already" (the bot has it already: nothing changed)

local chat, now = ARGV[1], tonumber(ARGV[2])
local owner = redis.call('HGET', KEYS[1], 'owner') or ''
if owner == '' or owner == ARGV[7] then
  return 'already'
end
owner_let_go(KEYS[1], KEYS[7], KEYS[8], now)
owner_transition(KEYS[1], KEYS[4], KEYS[5], KEYS[6], ARGV[4], chat, now, ARGV[3], ARGV[7], '', ARGV[5])
redis.call('ZREM', KEYS[2], chat)
redis.call('ZREM', KEYS[3], chat)
redis.call('HSET', KEYS[1], 'status', ARGV[8], 'handoff_until_ms', '0', 'conv', '1', 'step', ARGV[6],
  'closed_reason', '', 'admitted_from_queue', '0', 'leave_message', '')
return 'ok'
