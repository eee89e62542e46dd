-- _owner_lib: put in front of every owner_*.lua (wsm/store/scripts.py). An ownership transition is kept in
-- the chat's history (a record of kind "transition", never sent) and announced on the session's console
-- event stream, in the same script that makes it.
-- Every owner script's last ARGV is the JSON of the names it must not spell (wsm.store.event_stream.OWNER_NAMES):
-- {"bot", "with_operator" (wsm.core.status.Owner), "phone" (the phone's operator name), "record" (the history
-- kind), "event" (the stream event type)}.
local N = cjson.decode(ARGV[#ARGV])

local function owner_transition(state, log, msgs, stream, stream_max, chat, now, record_id, to, operator, by)
  local from = redis.call('HGET', state, 'owner')
  if not from or from == '' then from = N.bot end
  local previous = redis.call('HGET', state, 'operator') or ''
  redis.call('HSET', state, 'owner', to, 'operator', operator, 'owner_ms', now)
  local record = cjson.encode({id = record_id, kind = N.record, direction = 'internal', from = from, to = to,
    operator = operator, previous_operator = previous, by = by, timestamp = now / 1000})
  redis.call('HSET', msgs, record_id, record)
  redis.call('RPUSH', log, record_id)
  redis.call('XADD', stream, 'MAXLEN', '~', stream_max, '*', 'type', N.event, 'chat', chat, 'owner', to,
    'operator', operator)
  return from, previous
end

-- the operator who held the chat lets go of it: one chat less on their load, its duration for the queue's ETA
local function owner_let_go(state, load, handle_stats, now)
  if redis.call('HGET', state, 'owner') ~= N.with_operator then return end
  local operator = redis.call('HGET', state, 'operator') or ''
  if operator ~= '' and tonumber(redis.call('HGET', load, operator) or '0') > 0 then
    redis.call('HINCRBY', load, operator, -1)
  end
  local since = tonumber(redis.call('HGET', state, 'owner_ms') or '')
  if since then
    redis.call('LPUSH', handle_stats, now - since)
    redis.call('LTRIM', handle_stats, 0, 49)
  end
end
