-- calendar_lock: take, extend or give back the lock of a session's CalDAV push (one pusher per session keeps
-- the calendar's changes in outbox order when two notifier processes get the same tick).
--
-- KEYS[1] calendar:lock
-- ARGV[1] the caller's token  ARGV[2] lock length (ms); 0 gives the lock back
-- Returns 1 when the caller holds the lock (or gave it back), 0 when another process holds it

local holder = redis.call('GET', KEYS[1])
if tonumber(ARGV[2]) == 0 then
  if holder == ARGV[1] then redis.call('DEL', KEYS[1]) end
  return 1
end
if holder and holder ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
