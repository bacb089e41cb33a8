-- Takes or keeps namespaces' open-stream slots, on Redis's clock.
-- Take: KEYS[1] the namespace's zset; ARGV: 'take', ttl ms, holder, max.
--   Returns 1 when taken, 0 when `max` live slots are held already.
-- Keep: KEYS the zsets; ARGV: 'keep', ttl ms, then one holder per key.
--   Renews the slots that still exist; returns 1.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
if ARGV[1] == 'take' then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then return 0 end
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ttl * 2)
  return 1
end
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, 'XX', now + ttl, ARGV[i + 2])
  redis.call('PEXPIRE', key, ttl * 2)
end
return 1
