-- _owner_lib: put in front of every owner_*.lua (wsm/store/scripts.py). An ownership transition is kept in
-- the chat's history (a record of kind "transition", never sent) and announced on the session's console
-- event stream, in the same script that makes it.
-- Every owner script's last ARGV is the JSON of the names it must not spell (wsm.store.event_stream.owner_args):
-- {"bot", "with_operator" (wsm.core.status.Owner), "phone" (the phone's operator name), "record" (the history
-- kind), "event" (the stream event type), "history": {window, max, dedupe_max, dedupe_ttl, retention}}.
-- _history_lib.lua is put in front of this file: the transition is one more id/body pair of the history.
local N = cjson.decode(ARGV[#ARGV])

local function owner_transition(state, history, seen, stream, stream_max, chat, now, record_id, to, operator, by)
  local from = redis.call('HGET', state, 'owner')
  if not from or from == '' then from = N.bot end
  local previous = redis.call('HGET', state, 'operator') or ''
  redis.call('HSET', state, 'owner', to, 'operator', operator, 'owner_ms', now)
  -- the compact body (wsm/store/record_codec.py): direction, timestamp, and the rest in its extras (13th)
  local body = {'internal', cjson.null, now / 1000}
  for k = 4, 12 do body[k] = cjson.null end
  body[13] = {kind = N.record, from = from, to = to, operator = operator, previous_operator = previous, by = by}
  local H = N.history
  redis.call('RPUSH', history, record_id, cjson.encode(body))
  appended(history, seen, 1, H.window, H.max, H.dedupe_max, H.dedupe_ttl, H.retention)
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
