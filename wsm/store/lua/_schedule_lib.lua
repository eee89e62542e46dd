-- _schedule_lib: helpers shared by every schedule_*.lua; wsm/store/scripts.py puts this text in front of each.
-- Every schedule script has the same KEYS and the first two ARGV:
-- KEYS[1] sched:req:<request id>  KEYS[2] sched:holds  KEYS[3] sched:index  KEYS[4] reminders:due
-- KEYS[5] calendar:outbox  KEYS[6] sched:waitlist  KEYS[7] waitlist:offers
-- ARGV[1] the sched key prefix "wsm:{S}:sched:" (apt:<id>, busy:<provider>[:span], chat:<C> hang off it)
-- ARGV[2] JSON: now_ms, hold_ms, max_future, reminders [min], notice_ms, retention_ms, outbox_max,
--         waitlist_max, req_ttl_s, request_id, plus the script's own fields.
-- Answers are JSON {"ok": <appointment>} or {"err": <error class>, "msg": <text>}, remembered under KEYS[1].

local P = ARGV[1]
local A = cjson.decode(ARGV[2])
local NOW = tonumber(A.now_ms)
local K_REQ, K_HOLDS, K_INDEX, K_REMIND, K_CAL, K_WAIT, K_OFFERS = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local FIELDS = {'id', 'service', 'provider', 'start', 'end', 'chat', 'status', 'created_ms', 'changed_ms',
  'hold_expires_ms', 'slot_id', 'reason', 'start_ms', 'end_ms', 'busy_start', 'busy_end', 'day'}

local function k_apt(id) return P .. 'apt:' .. id end
local function k_busy(p) return P .. 'busy:' .. p end
local function k_span(p) return P .. 'busy:' .. p .. ':span' end
local function k_chat(c) return P .. 'chat:' .. c end
local function num(x) return string.format('%d', x) end
local function new_id(kind, salt) return kind .. string.sub(redis.sha1hex(A.request_id .. salt), 1, 12) end

local function get(id)
  local flat = redis.call('HGETALL', k_apt(id))
  if #flat == 0 then return nil end
  local a = {}
  for i = 1, #flat, 2 do a[flat[i]] = flat[i + 1] end
  return a
end

local function public(a)
  local out = {}
  for _, f in ipairs({'id', 'service', 'provider', 'start', 'end', 'chat', 'status', 'created_ms', 'changed_ms',
    'hold_expires_ms', 'slot_id', 'reason'}) do out[f] = a[f] or '' end
  return out
end

local function put(a)
  a.changed_ms = num(NOW)
  local key = k_apt(a.id)
  local flat = {}
  for _, f in ipairs(FIELDS) do
    flat[#flat + 1] = f
    flat[#flat + 1] = tostring(a[f] or '')
  end
  redis.call('HSET', key, unpack(flat))
  local until_ms = tonumber(a.end_ms) + A.retention_ms
  redis.call('PEXPIREAT', key, num(until_ms))
  redis.call('ZADD', K_INDEX, a.start_ms, a.id)
  redis.call('ZREMRANGEBYSCORE', K_INDEX, '-inf', '(' .. num(NOW - A.retention_ms))
  redis.call('SADD', k_chat(a.chat), a.id)
  redis.call('PEXPIREAT', k_chat(a.chat), num(until_ms), 'GT')
  if redis.call('PTTL', k_chat(a.chat)) < 0 then redis.call('PEXPIREAT', k_chat(a.chat), num(until_ms)) end
end

local function member(a) return a.busy_start .. '-' .. a.busy_end .. '|' .. a.id end

local function add_busy(p, bs, be, id)
  local span = tonumber(redis.call('GET', k_span(p)) or '0')
  if be - bs > span then
    span = be - bs
    redis.call('SET', k_span(p), num(span))
  end
  redis.call('ZADD', k_busy(p), bs, num(bs) .. '-' .. num(be) .. '|' .. id)
  redis.call('ZREMRANGEBYSCORE', k_busy(p), '-inf', '(' .. num(math.floor(NOW / 60000) - span - 1440))
end

local function to_outbox(a)
  redis.call('RPUSH', K_CAL, cjson.encode(public(a)))
  redis.call('LTRIM', K_CAL, -A.outbox_max, -1)
end

local function unremind(id)
  for _, m in ipairs(A.reminders) do redis.call('ZREM', K_REMIND, id .. '|' .. num(m)) end
end

local function remind(a)
  for _, m in ipairs(A.reminders) do
    local due = tonumber(a.start_ms) - m * 60000
    if due > NOW then
      redis.call('ZADD', K_REMIND, num(due), a.id .. '|' .. num(m))
    else
      redis.call('ZREM', K_REMIND, a.id .. '|' .. num(m))
    end
  end
end

-- An active appointment leaves the calendar: busy interval, hold and reminders go; a booked one is told to CalDAV.
local function release(a, status, reason)
  local was = a.status
  redis.call('ZREM', k_busy(a.provider), member(a))
  redis.call('ZREM', K_HOLDS, a.id)
  unremind(a.id)
  a.status = status
  a.reason = reason
  a.hold_expires_ms = ''
  put(a)
  if was == 'booked' then to_outbox(a) end
end

local function expired(a)
  return a.status == 'held' and tonumber(a.hold_expires_ms) <= NOW
end

-- True if `id` is a hold that ran out (it is released now, lazily) or no longer exists.
local function stale(id)
  local a = get(id)
  if not a then
    redis.call('ZREM', K_HOLDS, id)
    return false
  end
  if expired(a) then
    release(a, 'cancelled', 'hold_expired')
    return true
  end
  return false
end

local function sweep(n)
  local ids = redis.call('ZRANGEBYSCORE', K_HOLDS, '-inf', num(NOW), 'LIMIT', 0, n)
  for _, id in ipairs(ids) do stale(id) end
  return #ids
end

-- The id of an active appointment or block of provider `p` overlapping [s, e) (minutes), ignoring ids in `ignore`.
local function conflict(p, s, e, ignore)
  local span = tonumber(redis.call('GET', k_span(p)) or '0')
  local members = redis.call('ZRANGEBYSCORE', k_busy(p), num(s - span), '(' .. num(e))
  for _, m in ipairs(members) do
    local be, id = string.match(m, '^%-?%d+%-(%-?%d+)|(.+)$')
    if tonumber(be) > s and not ignore[id] then
      if not (string.sub(id, 1, 4) == 'apt_' and stale(id)) then return id end
    end
  end
  return nil
end

-- The chat's held (not expired) or booked appointments that have not ended; expired holds are released.
local function active_of(chat)
  local out = {}
  for _, id in ipairs(redis.call('SMEMBERS', k_chat(chat))) do
    local a = get(id)
    if not a then
      redis.call('SREM', k_chat(chat), id)
    elseif expired(a) then
      release(a, 'cancelled', 'hold_expired')
    elseif (a.status == 'held' or a.status == 'booked') and tonumber(a.end_ms) > NOW then
      out[#out + 1] = a
    end
  end
  return out
end

local function finish(result)
  local encoded = cjson.encode(result)
  redis.call('SET', K_REQ, encoded, 'EX', A.req_ttl_s)
  return encoded
end
local function ok(a) return finish({ok = public(a)}) end
local function fail(name, msg) return finish({err = name, msg = msg}) end

-- A new hold of `slot` (a table with provider, service, start, end, start_ms, end_ms, busy_start, busy_end,
-- slot_id, day) for `chat`; releases the chat's other holds. Returns the appointment, or nil + error name + text.
local function make_hold(chat, slot, id, hold_ms)
  local ignore, own, booked = {}, {}, 0
  for _, a in ipairs(active_of(chat)) do
    if a.status == 'held' then
      ignore[a.id] = true
      own[#own + 1] = a
    else
      booked = booked + 1
    end
  end
  if booked >= A.max_future then
    return nil, 'LimitReached', 'already ' .. booked .. ' upcoming appointment(s), the most allowed'
  end
  if conflict(slot.provider, slot.busy_start, slot.busy_end, ignore) then
    return nil, 'SlotUnavailable', slot.slot_id .. ' is taken'
  end
  for _, a in ipairs(own) do release(a, 'cancelled', 'replaced') end
  local a = {id = id, service = slot.service, provider = slot.provider, start = slot.start, ['end'] = slot['end'],
    start_ms = num(slot.start_ms), end_ms = num(slot.end_ms), busy_start = num(slot.busy_start),
    busy_end = num(slot.busy_end), slot_id = slot.slot_id, day = slot.day, chat = chat, status = 'held',
    created_ms = num(NOW), hold_expires_ms = num(NOW + hold_ms), reason = ''}
  put(a)
  add_busy(slot.provider, slot.busy_start, slot.busy_end, id)
  redis.call('ZADD', K_HOLDS, a.hold_expires_ms, id)
  return a
end

-- A slot was freed: the first waiting chat that matches gets a hold on it and an offer is queued for sending.
local function offer(freed)
  if tonumber(freed.start_ms) < NOW + A.notice_ms then return end
  local slot = {provider = freed.provider, service = freed.service, start = freed.start, ['end'] = freed['end'],
    start_ms = tonumber(freed.start_ms), end_ms = tonumber(freed.end_ms), busy_start = tonumber(freed.busy_start),
    busy_end = tonumber(freed.busy_end), slot_id = freed.slot_id, day = freed.day}
  for _, raw in ipairs(redis.call('LRANGE', K_WAIT, 0, -1)) do
    local w = cjson.decode(raw)
    if w.chat ~= freed.chat and w.service == freed.service and (w.provider == '' or w.provider == freed.provider)
      and (w.day == '' or w.day == freed.day) then
      local a = make_hold(w.chat, slot, new_id('apt_', '|offer|' .. freed.id), A.hold_ms)
      if a then
        redis.call('LREM', K_WAIT, 1, raw)
        redis.call('ZADD', K_OFFERS, num(NOW), cjson.encode({kind = 'waitlist_offer', chat = w.chat,
          appointment = public(a)}))
        redis.call('ZREMRANGEBYRANK', K_OFFERS, 0, -A.waitlist_max - 1)
        return
      end
    end
  end
end

local prior = redis.call('GET', K_REQ)
if prior then return prior end
local SWEPT = sweep(20)
