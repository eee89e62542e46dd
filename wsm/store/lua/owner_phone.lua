-- owner_phone: a reply typed on the phone took the chat over (ingest_message already made the bot quiet for
-- WSM_HANDOFF_S): the ownership says so, and the chat leaves the human queue. A chat an operator holds in the
-- console stays theirs (and the bot stays quiet for as long as they hold it).
--
-- KEYS[1] chat state  KEYS[2] human queue  KEYS[3] human notify due  KEYS[4] chat history  KEYS[5] chat seen
-- KEYS[6] events stream
-- ARGV[1] chat id  ARGV[2] now (ms)  ARGV[3] history record id  ARGV[4] stream max length
-- ARGV[5] owner with_operator  ARGV[6] phone operator name  ARGV[7] the bot stays quiet until, for a
-- console operator's chat (ms)
-- ARGV[last] the names the script must not spell (see _owner_lib.lua)
-- Returns "ok" | "operator" (an operator holds it) | "phone" (the phone had it already)

local chat, now = ARGV[1], tonumber(ARGV[2])
if redis.call('HGET', KEYS[1], 'owner') == ARGV[5] then
  if redis.call('HGET', KEYS[1], 'operator') ~= ARGV[6] then
    redis.call('HSET', KEYS[1], 'handoff_until_ms', ARGV[7])
    return 'operator'
  end
  redis.call('HSET', KEYS[1], 'owner_ms', now)
  return 'phone'
end
owner_transition(KEYS[1], KEYS[4], KEYS[5], KEYS[6], ARGV[4], chat, now, ARGV[3], ARGV[5], ARGV[6], ARGV[6])
redis.call('ZREM', KEYS[2], chat)
redis.call('ZREM', KEYS[3], chat)
return 'ok'
