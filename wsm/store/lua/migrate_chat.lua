-- migrate_chat: fold a chat's old-layout history (log ids + msgs records) into its history list, atomically.
-- The old records are older than anything the new layout wrote, so they go in front. The caller read
-- and re-encoded them; if the old keys changed since (an old-version process still writing), nothing
-- is done and "changed" is returned, so the caller reads again.
--
-- KEYS[1] chat log (old)  KEYS[2] chat msgs (old)  KEYS[3] chat history  KEYS[4] chat seen
-- ARGV[1] LLEN of log when read  ARGV[2] HLEN of msgs when read
-- ARGV[3] JSON array of record bodies (compact), oldest first  ARGV[4] JSON array of their compact ids
-- ARGV[5] history max  ARGV[6] dedupe window  ARGV[7] dedupe max  ARGV[8] dedupe ttl (s)  ARGV[9] retention (s)
-- Returns {"migrated", records moved} | {"changed"}

if redis.call('LLEN', KEYS[1]) ~= tonumber(ARGV[1]) or redis.call('HLEN', KEYS[2]) ~= tonumber(ARGV[2]) then
  return {'changed'}
end
local records, ids = cjson.decode(ARGV[3]), cjson.decode(ARGV[4])
for k = #records, 1, -1 do  -- id, body pairs in front
  redis.call('LPUSH', KEYS[3], records[k], ids[k])
end
local total = redis.call('LLEN', KEYS[3]) / 2
local window = math.min(tonumber(ARGV[6]), tonumber(ARGV[5]))
local outside = {}
for k = 1, #ids do
  if k - 1 < total - window then outside[#outside + 1] = ids[k] end
end
for k = #outside, 1, -1 do  -- older than what the new layout already remembered: in front
  redis.call('LPUSH', KEYS[4], outside[k])
end
if #outside > 0 then
  redis.call('LTRIM', KEYS[4], -tonumber(ARGV[7]), -1)
  redis.call('EXPIRE', KEYS[4], ARGV[8])
end
redis.call('LTRIM', KEYS[3], -2 * tonumber(ARGV[5]), -1)
if total > 0 then
  redis.call('EXPIRE', KEYS[3], ARGV[9])
end
redis.call('DEL', KEYS[1], KEYS[2])
return {'migrated', #records}
