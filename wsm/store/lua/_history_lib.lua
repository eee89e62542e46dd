-- _history_lib: helpers put in front of the scripts that touch a chat's history (see wsm/store/scripts.py).
-- A chat's history is ONE list, oldest first, of id/body pairs: [id1, body1, id2, body2, ...]
-- (wsm/store/record_codec.py). A body is a positional JSON array, 1-based here: [1] direction [2] text
-- [3] timestamp [4] status [5] ack [6] source [7] received ms [8] sent ms [9] local id [10] status ms
-- [11] reply to [12] media [13] extras. Ids never start with "[", so LPOS on an id finds an id element.
-- A message id is known (a duplicate) while it is among the last `window` records, or in the chat's
-- `seen` list, which takes the ids that leave that window (bounded by count, expiring).

local STATUS, ACK, SENT_MS, LOCAL_ID, STATUS_MS = 4, 5, 8, 9, 10
local REMOVED = '\0removed\0'  -- what a removed pair is overwritten with before LREM

-- Set a position, filling the gap with nulls (cjson writes no holes).
local function set_field(body, position, value)
  for k = #body + 1, position - 1 do body[k] = cjson.null end
  body[position] = value
end

local function field(body, position)
  local value = body[position]
  if value == cjson.null then return nil end
  return value
end

-- The newest record with this id among the last `depth` records (all when depth <= 0): the index of
-- its id element (the body follows it), nil when absent. One LPOS, in C.
local function find_id(history, id, depth)
  if depth > 0 then
    return redis.call('LPOS', history, id, 'RANK', -1, 'MAXLEN', 2 * depth) or nil
  end
  return redis.call('LPOS', history, id, 'RANK', -1) or nil
end

-- A stored record by id: its id index, raw body and decoded body; the window first, deeper only when
-- `seen` says the id left it, so an id never stored (an early ack, a send with no echo yet) costs little.
local function locate(history, seen, id, window)
  local index = find_id(history, id, window)
  if not index and redis.call('LPOS', seen, id) then
    index = find_id(history, id, 0)
  end
  if not index then return nil end
  local raw = redis.call('LINDEX', history, index + 1)
  return index, raw, cjson.decode(raw)
end

local function remember_ids(seen, ids, dedupe_max, dedupe_ttl)
  if #ids == 0 then return end
  redis.call('RPUSH', seen, unpack(ids))
  redis.call('LTRIM', seen, -dedupe_max, -1)
  redis.call('EXPIRE', seen, dedupe_ttl)
end

local function is_known(history, seen, id, window)
  return find_id(history, id, window) ~= nil or redis.call('LPOS', seen, id) ~= false
end

-- Remove the pair whose id element is at `index`.
local function remove_pair(history, index)
  redis.call('LSET', history, index, REMOVED)
  redis.call('LSET', history, index + 1, REMOVED)
  redis.call('LREM', history, 2, REMOVED)
end

-- After `added` records were appended: the ids that left the window go to `seen`; the history is
-- trimmed to `history_max` records (those ids left the window before) and kept `retention` seconds.
local function appended(history, seen, added, window, history_max, dedupe_max, dedupe_ttl, retention)
  window = math.min(window, history_max)
  local left = {}
  for j = added, 1, -1 do
    local id = redis.call('LINDEX', history, -2 * (window + j))
    if id then left[#left + 1] = id end
  end
  remember_ids(seen, left, dedupe_max, dedupe_ttl)
  redis.call('LTRIM', history, -2 * history_max, -1)
  redis.call('EXPIRE', history, retention)
end
