-- schedule_erase: delete every appointment of a chat (LGPD/GDPR erasure): hashes, busy intervals, holds, index,
-- reminders, waitlist entries, offers and calendar-outbox records naming it. KEYS and ARGV[1..2]: see
-- _schedule_lib.lua; ARGV[2] also has: chat. Returns the number of appointments deleted.
redis.call('DEL', K_REQ)
local n = 0
for _, id in ipairs(redis.call('SMEMBERS', k_chat(A.chat))) do
  local a = get(id)
  if a then
    redis.call('ZREM', k_busy(a.provider), member(a))
    n = n + 1
  end
  redis.call('ZREM', K_HOLDS, id)
  redis.call('ZREM', K_INDEX, id)
  local cursor = '0'
  repeat
    local page = redis.call('ZSCAN', K_REMIND, cursor, 'MATCH', id .. '|*', 'COUNT', 1000)
    cursor = page[1]
    for i = 1, #page[2], 2 do redis.call('ZREM', K_REMIND, page[2][i]) end
  until cursor == '0'
  redis.call('DEL', k_apt(id))
end
redis.call('DEL', k_chat(A.chat))
for _, raw in ipairs(redis.call('LRANGE', K_WAIT, 0, -1)) do
  if cjson.decode(raw).chat == A.chat then redis.call('LREM', K_WAIT, 0, raw) end
end
for _, raw in ipairs(redis.call('ZRANGE', K_OFFERS, 0, -1)) do
  if cjson.decode(raw).chat == A.chat then redis.call('ZREM', K_OFFERS, raw) end
end
for _, raw in ipairs(redis.call('LRANGE', K_CAL, 0, -1)) do
  if cjson.decode(raw).chat == A.chat then redis.call('LREM', K_CAL, 0, raw) end
end
return n
