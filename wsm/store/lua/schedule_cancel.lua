-- schedule_cancel: cancel a held or booked appointment (chat "" = an operator); the freed slot is offered to the
-- first matching chat on the waitlist (a hold for it, plus an offer record). Cancelling twice changes nothing.
-- KEYS and ARGV[1..2]: see _schedule_lib.lua. ARGV[2] also has: id, chat.
-- Errors: UnknownAppointment, NotYours.
local a = get(A.id)
if not a then return fail('UnknownAppointment', 'no appointment ' .. A.id) end
if A.chat ~= '' and a.chat ~= A.chat then return fail('NotYours', A.id .. ' belongs to another chat') end
if a.status ~= 'held' and a.status ~= 'booked' then return ok(a) end
if expired(a) then
  release(a, 'cancelled', 'hold_expired')
  return ok(a)
end
release(a, 'cancelled', A.chat == '' and 'operator' or 'person')
offer(a)
return ok(a)
