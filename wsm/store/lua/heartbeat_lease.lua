-- heartbeat_lease: extend a chat's lease only if the caller still holds it (fencing before each send).
--
-- KEYS[1] chat lease   ARGV[1] lease token   ARGV[2] lease length (ms)
-- Returns 1 if still held (and extended), else 0

if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
