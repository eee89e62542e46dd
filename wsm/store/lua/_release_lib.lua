-- _release_lib: giving a chat's lease back, shared by release_lease.lua and outbox_sent.lua (which gives it back in
-- the same step as the last reply's pop, saving the handler a round trip and Redis an AOF write per message).
-- The chat leaves "ready" only if nothing is left to do. A waiting chat's inbox is kept until it is served, so for
-- it "nothing left" means nothing new since the holder looked; once the chat is active (it may have been admitted
-- meanwhile) the inbox must be empty. Returns 1 when the chat still has work (the caller should look again), else 0.

local function release(lease, inbox, outbox, ready, state, token, chat, examined, waiting)
  if redis.call('GET', lease) == token then
    redis.call('DEL', lease)
  end
  local pending = redis.call('LLEN', inbox)
  local seen = 0
  if redis.call('HGET', state, 'status') == waiting then
    seen = tonumber(examined)
  end
  if redis.call('LLEN', outbox) == 0 and pending <= seen then
    redis.call('SREM', ready, chat)
    return 0
  end
  return 1
end
