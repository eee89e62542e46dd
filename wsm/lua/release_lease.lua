-- release_lease: give up a chat's lease; drop the chat from "ready" only if nothing arrived meanwhile.
--
-- KEYS[1] chat lease  KEYS[2] chat inbox  KEYS[3] chat outbox  KEYS[4] ready
-- ARGV[1] lease token  ARGV[2] chat id
-- ARGV[3] inbox length the holder has fully examined (0 for a chat whose inbox it drained)
-- Returns 1 when the chat still has work (the caller should look again), else 0

if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
local inbox = redis.call('LLEN', KEYS[2])
if redis.call('LLEN', KEYS[3]) == 0 and inbox <= tonumber(ARGV[3]) then
  redis.call('SREM', KEYS[4], ARGV[2])
  return 0
end
return 1
