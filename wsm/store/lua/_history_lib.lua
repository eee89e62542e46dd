-- _history_lib: helpers put in front of the scripts that touch a chat's history (see wsm/store/scripts.py).
-- A chat's history is ONE list of compact records, oldest first: positional JSON arrays
-- (wsm/store/record_codec.py), 1-based here: [1] id [2] direction [3] text [4] timestamp [5] status
-- [6] ack [7] source [8] received ms [9] sent ms [10] local id [11] status ms [12] reply to [13] media
-- [14] extras. A message id is known (a duplicate) while it is among the last `window` records, or in
-- the chat's `seen` list, which takes the ids that leave that window (bounded by count, expiring).

local ID, STATUS, ACK, SENT_MS, LOCAL_ID, STATUS_MS = 1, 5, 6, 9, 10, 11

-- Set a position, filling the gap with nulls (cjson writes no holes).
local function set_field(rec, position, value)
  for k = #rec + 1, position - 1 do rec[k] = cjson.null end
  rec[position] = value
end

local function field(rec, position)
  local value = rec[position]
  if value == cjson.null then return nil end
  return value
end

local function id_prefix(id)
  local escaped = string.gsub(id, '%p', '%%%0')
  escaped = string.gsub(escaped, '%%/', '\\?/')  -- cjson writes "/" as "\/"
  return '^%[%s*"' .. escaped .. '"'
end

-- The newest record with this id among the last `depth` records (all when depth <= 0):
-- its 0-based index, raw JSON and decoded table; nil when absent. Reads from the tail in chunks.
local function find_record(key, id, depth)
  local prefix = id_prefix(id)
  local length = redis.call('LLEN', key)
  local floor = 0
  if depth > 0 then floor = math.max(0, length - depth) end
  local stop = length - 1
  while stop >= floor do
    local start = math.max(floor, stop - 63)
    local chunk = redis.call('LRANGE', key, start, stop)
    for j = #chunk, 1, -1 do
      if string.find(chunk[j], prefix) then
        local rec = cjson.decode(chunk[j])
        if rec[ID] == id then return start + j - 1, chunk[j], rec end
      end
    end
    stop = start - 1
  end
  return nil
end

local function remember_ids(seen, ids, dedupe_max, dedupe_ttl)
  if #ids == 0 then return end
  redis.call('RPUSH', seen, unpack(ids))
  redis.call('LTRIM', seen, -dedupe_max, -1)
  redis.call('EXPIRE', seen, dedupe_ttl)
end

local function is_known(history, seen, id, window)
  if find_record(history, id, window) then return true end
  return redis.call('LPOS', seen, id) ~= false
end

-- A stored record by id: the window first; deeper only when `seen` says the id left it, so looking up
-- an id never stored (an early ack, a send with no echo yet) reads no more than the window.
local function locate(history, seen, id, window)
  local index, raw, rec = find_record(history, id, window)
  if index then return index, raw, rec end
  if redis.call('LPOS', seen, id) == false then return nil end
  return find_record(history, id, 0)
end

-- After `added` records were appended: the ids that left the window go to `seen`; the history is
-- trimmed to `history_max` (those ids left the window before) and kept for `retention` seconds.
local function appended(history, seen, added, window, history_max, dedupe_max, dedupe_ttl, retention)
  window = math.min(window, history_max)
  local left = {}
  for j = added, 1, -1 do
    local raw = redis.call('LINDEX', history, -(window + j))
    if raw then
      local id = cjson.decode(raw)[ID]
      if type(id) == 'string' then left[#left + 1] = id end
    end
  end
  remember_ids(seen, left, dedupe_max, dedupe_ttl)
  redis.call('LTRIM', history, -history_max, -1)
  redis.call('EXPIRE', history, retention)
end
