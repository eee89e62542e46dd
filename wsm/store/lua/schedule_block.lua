-- schedule_block: an operator blocks [busy_start, busy_end) minutes of a provider (no slots there); appointments
-- already there stay and are listed in the answer. KEYS and ARGV[1..2]: see _schedule_lib.lua.
-- ARGV[2] also has: provider, busy_start, busy_end, start, end. Answer {"ok": {id, provider, start, end, overlapping}}.
local id = new_id('blk_', '')
local overlapping = {}
local span = tonumber(redis.call('GET', k_span(A.provider)) or '0')
for _, m in ipairs(redis.call('ZRANGEBYSCORE', k_busy(A.provider), num(A.busy_start - span), '(' .. num(A.busy_end))) do
  local be, other = string.match(m, '^%-?%d+%-(%-?%d+)|(.+)$')
  if tonumber(be) > A.busy_start and string.sub(other, 1, 4) == 'apt_' and not stale(other) then
    overlapping[#overlapping + 1] = other
  end
end
add_busy(A.provider, A.busy_start, A.busy_end, id)
return finish({ok = {id = id, provider = A.provider, start = A.start, ['end'] = A['end'],
  overlapping = cjson.encode(overlapping)}})
