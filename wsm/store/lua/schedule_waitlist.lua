-- schedule_waitlist: a chat waits for a slot of a service (optionally a provider and a local day YYYY-MM-DD); a
-- cancel or reschedule that frees a matching slot holds it for the first waiting chat. Joining again replaces
-- the chat's entry for that service. KEYS and ARGV[1..2]: see _schedule_lib.lua; ARGV[2] also has: chat,
-- service, provider, day. Answer {"ok": <entry>}.
for _, raw in ipairs(redis.call('LRANGE', K_WAIT, 0, -1)) do
  local w = cjson.decode(raw)
  if w.chat == A.chat and w.service == A.service then redis.call('LREM', K_WAIT, 0, raw) end
end
local entry = {chat = A.chat, service = A.service, provider = A.provider, day = A.day, at_ms = num(NOW)}
redis.call('RPUSH', K_WAIT, cjson.encode(entry))
redis.call('LTRIM', K_WAIT, -A.waitlist_max, -1)
return finish({ok = entry})
