-- Checks that this build may use the store, and records its format: the
-- rule of rolling upgrades (README, "Upgrades").
--
-- KEYS[1] the store's format: the newest format any build has written
-- KEYS[2] its compat: the oldest format that may still run against it
-- ARGV[1] this build's format F, ARGV[2] the compat it requires C (the
--   oldest format whose replicas may run beside it), ARGV[3] the oldest
--   format it reads R
--
-- Returns {'ok', format, compat} after raising them to this build's (never
-- lowering them), or {'newer', format, compat} when a newer build requires
-- formats this one is not, {'older', format, compat} when the store is
-- older than this build reads, {'bad', value} for a value that is no
-- number.
local raw = redis.call('GET', KEYS[1])
if not raw then
  redis.call('SET', KEYS[1], ARGV[1])
  redis.call('SET', KEYS[2], ARGV[2])
  return {'ok', ARGV[1], ARGV[2]}
end
local f = tonumber(raw)
if not f then return {'bad', raw} end
local craw = redis.call('GET', KEYS[2])
local c = f
if craw then
  c = tonumber(craw)
  if not c then return {'bad', craw} end
end
local F, C, R = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if F < c then return {'newer', tostring(f), tostring(c)} end
if f < R then return {'older', tostring(f), tostring(c)} end
if f < F then
  redis.call('SET', KEYS[1], F)
  f = F
end
if c < C then
  redis.call('SET', KEYS[2], C)
  c = C
end
return {'ok', tostring(f), tostring(c)}
