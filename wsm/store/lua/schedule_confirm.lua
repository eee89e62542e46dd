-- schedule_confirm: a chat confirms its hold (held -> booked): reminders queued, change sent to the calendar outbox.
-- KEYS and ARGV[1..2]: see _schedule_lib.lua. ARGV[2] also has: id, chat.
-- Errors: UnknownAppointment, NotYours, HoldExpired (the slot is released), SlotUnavailable (cancelled meanwhile).
local a = get(A.id)
if not a then return fail('UnknownAppointment', 'no appointment ' .. A.id) end
if a.chat ~= A.chat then return fail('NotYours', A.id .. ' belongs to another chat') end
if a.status == 'booked' then return ok(a) end
if a.status == 'held' then
  if expired(a) then
    release(a, 'cancelled', 'hold_expired')
    return fail('HoldExpired', 'the hold of ' .. A.id .. ' ran out')
  end
  redis.call('ZREM', K_HOLDS, a.id)
  a.status = 'booked'
  a.hold_expires_ms = ''
  put(a)
  remind(a)
  to_outbox(a)
  return ok(a)
end
if a.reason == 'hold_expired' then return fail('HoldExpired', 'the hold of ' .. A.id .. ' ran out') end
return fail('SlotUnavailable', A.id .. ' is ' .. a.status)
