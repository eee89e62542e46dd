-- schedule_hold: hold a free slot for a chat for hold_ms (status "held"); the chat's previous hold is released.
-- KEYS and ARGV[1..2]: see _schedule_lib.lua. ARGV[2] also has: chat, slot {provider, service, start, end,
-- start_ms, end_ms, busy_start, busy_end (minutes, end + buffer), slot_id, day}.
-- Errors: LimitReached, SlotUnavailable. The appointment id is derived from the request id.
local id = new_id('apt_', '')
local existing = get(id)
if existing then return ok(existing) end
local a, err, msg = make_hold(A.chat, A.slot, id, A.hold_ms)
if not a then return fail(err, msg) end
return ok(a)
