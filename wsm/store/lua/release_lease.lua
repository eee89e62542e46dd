-- release_lease: give up a chat's lease; drop the chat from "ready" only if nothing is left to do.
-- A waiting chat's inbox is kept until it is served, so for it "nothing left" means nothing new since
-- the holder looked; once the chat is active (it may have been admitted meanwhile) the inbox must be empty.
--
-- KEYS[1] chat lease  KEYS[2] chat inbox  KEYS[3] chat outbox  KEYS[4] ready  KEYS[5] chat state
-- ARGV[1] lease token  ARGV[2] chat id
-- ARGV[3] inbox length the holder has fully examined (used only while the chat is waiting)
-- ARGV[4] chat status waiting (wsm.core.status)
-- Returns 1 when the chat still has work (the caller should look again), else 0

if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
local inbox = redis.call('LLEN', KEYS[2])
local examined = 0
if redis.call('HGET', KEYS[5], 'status') == ARGV[4] then
  examined = tonumber(ARGV[3])
end
if redis.call('LLEN', KEYS[3]) == 0 and inbox <= examined then
  redis.call('SREM', KEYS[4], ARGV[2])
  return 0
end
return 1
