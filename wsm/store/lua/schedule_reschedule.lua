-- schedule_reschedule: move an active appointment to another free slot of the same service (same id); the old
-- slot is freed and offered to the waitlist in the same step; reminders move with it. Nothing changes on refusal.
-- KEYS and ARGV[1..2]: see _schedule_lib.lua. ARGV[2] also has: id, chat, slot (as in schedule_hold).
-- Errors: UnknownAppointment, NotYours, HoldExpired, SlotUnavailable, BadSlot (another service).
local a = get(A.id)
if not a then return fail('UnknownAppointment', 'no appointment ' .. A.id) end
if a.chat ~= A.chat then return fail('NotYours', A.id .. ' belongs to another chat') end
if expired(a) then
  release(a, 'cancelled', 'hold_expired')
  return fail('HoldExpired', 'the hold of ' .. A.id .. ' ran out')
end
if a.status ~= 'held' and a.status ~= 'booked' then return fail('SlotUnavailable', A.id .. ' is ' .. a.status) end
local s = A.slot
if s.service ~= a.service then return fail('BadSlot', s.slot_id .. ' is not a slot of ' .. a.service) end
if conflict(s.provider, s.busy_start, s.busy_end, {[a.id] = true}) then
  return fail('SlotUnavailable', s.slot_id .. ' is taken')
end
local old = {}
for f, v in pairs(a) do old[f] = v end
redis.call('ZREM', k_busy(a.provider), member(a))
a.provider, a.start, a['end'], a.slot_id, a.day = s.provider, s.start, s['end'], s.slot_id, s.day
a.start_ms, a.end_ms, a.busy_start, a.busy_end = num(s.start_ms), num(s.end_ms), num(s.busy_start), num(s.busy_end)
put(a)
add_busy(s.provider, s.busy_start, s.busy_end, a.id)
if a.status == 'booked' then
  remind(a)
  to_outbox(a)
end
offer(old)
return ok(a)
