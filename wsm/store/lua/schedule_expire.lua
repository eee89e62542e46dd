-- schedule_expire: release up to ARGV[2].limit holds that ran out (a tick may call it; every other schedule
-- script also expires holds lazily). KEYS and ARGV[1..2]: see _schedule_lib.lua. Returns how many were looked at.
redis.call('DEL', K_REQ)
return SWEPT + sweep(A.limit)
