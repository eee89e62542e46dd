-- merge_chat: one person seen as two chats (…@lid and its phone chat …@c.us) becomes the phone chat, in one step.
-- Everything of the @lid chat moves: history (merged in time order), pending inbox and outbox, state, its slot
-- or queue place, the notifier's memory and its appointments (and waitlist entries, offers); the mapping is
-- recorded so later messages go straight to the phone chat. Idempotent: once the @lid keys are gone a second
-- run only records the mapping again. The @lid chat's lease is deleted: a handler holding it fails its next
-- fenced write and stops; what it had not committed is in the moved inbox and is handled under the phone chat.
-- When the phone chat is held by a handler, moved inbox/outbox items go after its own (its counts stay right);
-- otherwise they are merged in time order.
--
-- KEYS[1] lid:<L> mapping
-- KEYS[2..8]  @lid chat:  history, seen, inbox, state, outbox, lease, notify
-- KEYS[9..15] phone chat: history, seen, inbox, state, outbox, lease, notify
-- KEYS[16] ready  KEYS[17] active  KEYS[18] queue  KEYS[19] notify due  KEYS[20] queue seq
-- KEYS[21] sched:chat:<L>  KEYS[22] sched:chat:<P>  KEYS[23] sched:waitlist  KEYS[24] waitlist:offers
-- KEYS[25] waitlist:sent
-- ARGV[1] @lid chat id  ARGV[2] phone chat id  ARGV[3] mapping ttl (s)  ARGV[4] now (ms)
-- ARGV[5] history max  ARGV[6] inbox max  ARGV[7] state retention (s)  ARGV[8] session  ARGV[9] events channel
-- ARGV[10] sched key prefix (apt:<id> hangs off it)  ARGV[11..13] chat statuses active, waiting, handoff
-- ARGV[14] dedupe window (records)  ARGV[15] dedupe max (ids kept in seen)  ARGV[16] dedupe ttl (s)
-- ARGV[17] publish command (PUBLISH, or SPUBLISH on a cluster)
-- Returns {"merged", history records moved} | {"nothing", 0}

local LID, PN, NOW = ARGV[1], ARGV[2], tonumber(ARGV[4])
local ACTIVE, WAITING, HANDOFF = ARGV[11], ARGV[12], ARGV[13]
local L = {history = KEYS[2], seen = KEYS[3], inbox = KEYS[4], state = KEYS[5], outbox = KEYS[6], lease = KEYS[7],
  notify = KEYS[8]}
local C = {history = KEYS[9], seen = KEYS[10], inbox = KEYS[11], state = KEYS[12], outbox = KEYS[13], lease = KEYS[14],
  notify = KEYS[15]}
local READY, ACTIVE_Z, QUEUE, DUE, SEQ = KEYS[16], KEYS[17], KEYS[18], KEYS[19], KEYS[20]
local S_LID, S_PN, WAITLIST, OFFERS, SENT = KEYS[21], KEYS[22], KEYS[23], KEYS[24], KEYS[25]
local RETENTION, P = ARGV[7], ARGV[10]

redis.call('SET', KEYS[1], PN, 'EX', ARGV[3])

local function number_in(raw, name)
  local ok, rec = pcall(cjson.decode, raw or '')
  return ok and type(rec) == 'table' and tonumber(rec[name]) or 0
end

-- Two lists, each already in order, as one: each keeps its own order, and they interleave by when(value)
-- (our clock, ms); on a tie the @lid chat's item (the older chat) comes first.
local function by_time(older, newer, when)
  local out, i, j = {}, 1, 1
  local ti, tj = older[1] and when(older[1]), newer[1] and when(newer[1])
  while i <= #older or j <= #newer do
    if j > #newer or (i <= #older and ti <= tj) then
      out[#out + 1] = older[i]
      i = i + 1
      ti = older[i] and when(older[i])
    else
      out[#out + 1] = newer[j]
      j = j + 1
      tj = newer[j] and when(newer[j])
    end
  end
  return out
end

local function push(key, values)
  for i = 1, #values, 1000 do
    redis.call('RPUSH', key, unpack(values, i, math.min(i + 999, #values)))
  end
end

local function hash(key)
  local flat, h = redis.call('HGETALL', key), {}
  for i = 1, #flat, 2 do h[flat[i]] = flat[i + 1] end
  return h
end

local listed = redis.call('ZSCORE', ACTIVE_Z, LID) or redis.call('ZSCORE', QUEUE, LID)
  or redis.call('ZSCORE', DUE, LID) or redis.call('SISMEMBER', READY, LID) == 1
if redis.call('EXISTS', L.history, L.seen, L.inbox, L.state, L.outbox, L.lease, L.notify, S_LID) == 0 and not listed then
  return {'nothing', 0}
end

-- Ids inside a chat's keys drop the chat they repeat (wsm/store/record_codec.py: compact_id / full_id):
-- what moves from the @lid chat is re-written for the phone chat's keys.
local FLAGS = {t = 'true', f = 'false'}
local function full_id(stored, chat)
  if stored:sub(1, 1) == '~' then return stored:sub(2) end
  local flag = FLAGS[stored:sub(1, 1)]
  if flag and stored:sub(2, 2) == '~' then return flag .. '_' .. chat .. '_' .. stored:sub(3) end
  return stored
end
local function compact_id(id, chat)
  for short, flag in pairs(FLAGS) do
    local head = flag .. '_' .. chat .. '_'
    if #id > #head and id:sub(1, #head) == head then return short .. '~' .. id:sub(#head + 1) end
  end
  if id:sub(1, 1) == '~' or id:sub(1, 1) == '[' or id:sub(2, 2) == '~' then return '~' .. id end
  return id
end
local function moved_id(stored)
  return compact_id(full_id(stored, LID), PN)
end
-- a body's id fields (local id, reply to) at `offset` + their body positions 9 and 11
local function moved_body(raw, offset)
  local body = cjson.decode(raw)
  for _, pos in ipairs({offset + 9, offset + 11}) do
    if type(body[pos]) == 'string' then body[pos] = moved_id(body[pos]) end
  end
  return body
end

-- when a record happened on our clock: arrival (body position 7) for what came in, else its timestamp (3)
local function body_ms(body, offset)
  local received = tonumber(body[offset + 7])
  if received and received > 0 then return received end
  return (tonumber(body[offset + 3]) or 0) * 1000
end

-- history: every record the phone chat lacks, then one list in time order, trimmed as ingest trims it;
-- ids that end up past the dedupe window (and the @lid chat's own seen ids) go to the phone chat's seen list
local lid_hist = redis.call('LRANGE', L.history, 0, -1)
local window = tonumber(ARGV[14])
local fresh = {}
if #lid_hist > 0 then
  local pn_hist, known, pn_pairs = redis.call('LRANGE', C.history, 0, -1), {}, {}
  for i = 1, #pn_hist, 2 do
    known[pn_hist[i]] = true
    pn_pairs[#pn_pairs + 1] = {pn_hist[i], pn_hist[i + 1], body_ms(cjson.decode(pn_hist[i + 1]), 0)}
  end
  for i = 1, #lid_hist, 2 do
    local id = moved_id(lid_hist[i])
    if not known[id] then
      local body = moved_body(lid_hist[i + 1], 0)
      fresh[#fresh + 1] = {id, cjson.encode(body), body_ms(body, 0)}
      known[id] = true
    end
  end
  local pairs_in_order = by_time(fresh, pn_pairs, function(p) return p[3] end)
  local excess = #pairs_in_order - tonumber(ARGV[5])
  local flat, past = {}, {}
  for i, p in ipairs(pairs_in_order) do
    if i > math.max(excess, 0) then
      flat[#flat + 1] = p[1]
      flat[#flat + 1] = p[2]
    end
    if i <= #pairs_in_order - window then past[#past + 1] = p[1] end
  end
  local in_seen = {}
  for _, id in ipairs(redis.call('LRANGE', C.seen, 0, -1)) do in_seen[id] = true end
  local add = {}
  for _, id in ipairs(redis.call('LRANGE', L.seen, 0, -1)) do
    local moved = moved_id(id)
    if not in_seen[moved] then add[#add + 1] = moved; in_seen[moved] = true end
  end
  for _, id in ipairs(past) do
    if not in_seen[id] then add[#add + 1] = id; in_seen[id] = true end
  end
  remember_ids(C.seen, add, tonumber(ARGV[15]), tonumber(ARGV[16]))
  redis.call('DEL', C.history)
  push(C.history, flat)
  redis.call('EXPIRE', C.history, RETENTION)
end
redis.call('DEL', L.history, L.seen)

-- pending work: unhandled messages (one element each: [id, *body]) and unsent replies
local pn_held = redis.call('EXISTS', C.lease) == 1
local function move(from, to, rewrite, when)
  local mine = redis.call('LRANGE', from, 0, -1)
  if #mine == 0 then return end
  if rewrite then
    for i, raw in ipairs(mine) do mine[i] = rewrite(raw) end
  end
  if pn_held then
    push(to, mine)
  else
    local ordered = by_time(mine, redis.call('LRANGE', to, 0, -1), when)
    redis.call('DEL', to)
    push(to, ordered)
  end
  redis.call('DEL', from)
end
local function inbox_item(raw)
  local item = moved_body(raw, 1)
  item[1] = moved_id(item[1])
  return cjson.encode(item)
end
move(L.inbox, C.inbox, inbox_item, function(raw) return body_ms(cjson.decode(raw), 1) end)
redis.call('LTRIM', C.inbox, -tonumber(ARGV[6]), -1)
move(L.outbox, C.outbox, nil, function(raw) return number_in(raw, 'created_ms') end)

-- state: the livelier chat's fields win (served > handed off > waiting > other; then the later one, then the phone's)
local ls, ps = hash(L.state), hash(C.state)
if next(ls) ~= nil then
  local function rank(h)
    if h.status == ACTIVE then return 4 end
    if h.status == HANDOFF and (tonumber(h.handoff_until_ms) or 0) > NOW then return 3 end
    if h.status == WAITING then return 2 end
    return 1
  end
  local winner, loser = ps, ls
  local lr, pr = rank(ls), rank(ps)
  if next(ps) == nil or lr > pr or (lr == pr and (tonumber(ls.last_seen_ms) or 0) > (tonumber(ps.last_seen_ms) or 0)) then
    winner, loser = ls, ps
  end
  local merged, flat = {}, {}
  for k, v in pairs(loser) do merged[k] = v end
  for k, v in pairs(winner) do merged[k] = v end
  local seen = math.max(tonumber(ls.last_seen_ms) or 0, tonumber(ps.last_seen_ms) or 0)
  if seen > 0 then merged.last_seen_ms = string.format('%d', seen) end
  merged.inbox_seen = nil  -- the merged inbox is looked at again (a waiting chat is only checked for leave words)
  for k, v in pairs(merged) do
    flat[#flat + 1] = k
    flat[#flat + 1] = v
  end
  redis.call('DEL', C.state)
  redis.call('HSET', C.state, unpack(flat))
  redis.call('EXPIRE', C.state, RETENTION)
end
redis.call('DEL', L.state, L.lease)

-- one slot or one queue place: the person's earliest ticket, the latest activity
local status = redis.call('HGET', C.state, 'status')
local l_act, p_act = redis.call('ZSCORE', ACTIVE_Z, LID), redis.call('ZSCORE', ACTIVE_Z, PN)
local l_q, p_q = redis.call('ZSCORE', QUEUE, LID), redis.call('ZSCORE', QUEUE, PN)
redis.call('ZREM', ACTIVE_Z, LID)
redis.call('ZREM', QUEUE, LID)
redis.call('ZREM', DUE, LID)
redis.call('SREM', READY, LID)
if status == ACTIVE then
  local last = math.max(tonumber(l_act) or 0, tonumber(p_act) or 0)
  redis.call('ZADD', ACTIVE_Z, last > 0 and last or NOW, PN)
  redis.call('ZREM', QUEUE, PN)
  redis.call('ZREM', DUE, PN)
elseif status == WAITING then
  redis.call('ZREM', ACTIVE_Z, PN)
  local ticket = math.min(tonumber(l_q) or math.huge, tonumber(p_q) or math.huge)
  if ticket == math.huge then ticket = redis.call('INCR', SEQ) end
  redis.call('ZADD', QUEUE, ticket, PN)
  redis.call('ZADD', DUE, 'NX', 0, PN)
else
  redis.call('ZREM', ACTIVE_Z, PN)
  redis.call('ZREM', QUEUE, PN)
  redis.call('ZREM', DUE, PN)
end
if l_act or l_q or (p_act and status ~= ACTIVE) or (p_q and status ~= WAITING) then
  redis.call(ARGV[17] or 'PUBLISH', ARGV[9], cjson.encode({type = 'queue.changed', session = ARGV[8], chat = PN}))
end
if redis.call('LLEN', C.inbox) > 0 or redis.call('LLEN', C.outbox) > 0 then
  redis.call('SADD', READY, PN)
  redis.call(ARGV[17] or 'PUBLISH', ARGV[9], cjson.encode({type = 'message.received', session = ARGV[8], chat = PN}))
end

-- what the notifier remembers (last told position, send times): the phone chat's own when it has one
if redis.call('EXISTS', L.notify) == 1 then
  if redis.call('EXISTS', C.notify) == 0 then
    redis.call('RENAME', L.notify, C.notify)
  else
    redis.call('DEL', L.notify)
  end
end

-- appointments, waitlist entries and offers name the phone chat from now on
for _, id in ipairs(redis.call('SMEMBERS', S_LID)) do
  redis.call('SADD', S_PN, id)
  if redis.call('HGET', P .. 'apt:' .. id, 'chat') == LID then redis.call('HSET', P .. 'apt:' .. id, 'chat', PN) end
end
local ttl = redis.call('PTTL', S_LID)
if ttl > 0 and redis.call('PTTL', S_PN) < ttl then redis.call('PEXPIRE', S_PN, ttl) end
redis.call('DEL', S_LID)
local function renamed(raw)
  local ok, rec = pcall(cjson.decode, raw)
  if ok and type(rec) == 'table' and rec.chat == LID then
    rec.chat = PN
    return cjson.encode(rec)
  end
  return nil
end
for i, raw in ipairs(redis.call('LRANGE', WAITLIST, 0, -1)) do
  local new = renamed(raw)
  if new then redis.call('LSET', WAITLIST, i - 1, new) end
end
for _, key in ipairs({OFFERS, SENT}) do
  local flat = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
  for i = 1, #flat, 2 do
    local new = renamed(flat[i])
    if new then
      redis.call('ZREM', key, flat[i])
      redis.call('ZADD', key, flat[i + 1], new)
    end
  end
end
return {'merged', #fresh}
