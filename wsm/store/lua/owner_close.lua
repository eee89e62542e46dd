-- owner_close: an operator ends the conversation; the chat's next message starts afresh with the bot.
--
-- KEYS[1] chat state  KEYS[2] human queue  KEYS[3] human notify due  KEYS[4] chat history  KEYS[5] chat seen
-- KEYS[6] events stream  KEYS[7] operators load  KEYS[8] human handle stats
-- ARGV[1] chat id  ARGV[2] now (ms)  ARGV[3] history record id  ARGV[4] stream max length
-- ARGV[5] who did it  ARGV[6] owner closed  ARGV[7] status closed  ARGV[8] end reason handoff
-- ARGV[last] the names the script must not spell (see _owner_lib.lua)
-- Returns "ok" | "already" (already closed: nothing changed)

local chat, now = ARGV[1], tonumber(ARGV[2])
if redis.call('HGET', KEYS[1], 'owner') == ARGV[6] then
  return 'already'
end
owner_let_go(KEYS[1], KEYS[7], KEYS[8], now)
owner_transition(KEYS[1], KEYS[4], KEYS[5], KEYS[6], ARGV[4], chat, now, ARGV[3], ARGV[6], '', ARGV[5])
redis.call('ZREM', KEYS[2], chat)
redis.call('ZREM', KEYS[3], chat)
redis.call('HSET', KEYS[1], 'status', ARGV[7], 'handoff_until_ms', '0', 'conv', '0', 'step', '', 'fields', '{}',
  'closed_reason', ARGV[8], 'closed_ms', now, 'leave_message', '')
return 'ok'
