-- release_lease: give up a chat's lease; drop the chat from "ready" only if nothing is left to do (_release_lib).
--
-- KEYS[1] chat lease  KEYS[2] chat inbox  KEYS[3] chat outbox  KEYS[4] ready  KEYS[5] chat state
-- ARGV[1] lease token  ARGV[2] chat id
-- ARGV[3] inbox length the holder has fully examined (used only while the chat is waiting)
-- ARGV[4] chat status waiting (wsm.core.status)
-- Returns 1 when the chat still has work (the caller should look again), else 0

return release(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], ARGV[1], ARGV[2], ARGV[3], ARGV[4])
