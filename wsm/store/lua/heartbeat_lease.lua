-- heartbeat_lease: extend a chat's lease only if the caller still holds it (fencing before each send).
-- Like the lease itself (acquire_lease), the extension is not written to the AOF or to replicas.
--
-- KEYS[1] chat lease   ARGV[1] lease token   ARGV[2] lease length (ms)
-- Returns 1 if still held (and extended), else 0

redis.set_repl(redis.REPL_NONE)
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
