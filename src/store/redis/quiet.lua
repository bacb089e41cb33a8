-- The write-back window after a Redis that came back empty: until one
-- lease from now (Redis's clock) no shard may be taken (lease.lua) and no
-- step but the write-back itself may write a task or record a result
-- (write_tasks.lua, record.lua), so every replica writes back what it
-- holds before anything is decided from what is there. Never shortened.
--
-- KEYS[1] {meta}:quiet; KEYS[2..] every shard's lease hash (its `quiet`
-- field is the shard's copy, which write_tasks.lua reads in its own slot)
-- ARGV[1] the lease (ms); ARGV[2] '1' at the start of a write-back: every
-- shard is taken from its owner (its fence kept, so the next owner gets a
-- new one), '0' at its end: the window only extended
local t = redis.call('TIME')
local till = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
if till > (tonumber(redis.call('GET', KEYS[1]) or '0') or 0) then
  redis.call('SET', KEYS[1], till)
end
for i = 2, #KEYS do
  if till > (tonumber(redis.call('HGET', KEYS[i], 'quiet') or '0') or 0) then
    redis.call('HSET', KEYS[i], 'quiet', till)
  end
  if ARGV[2] == '1' then
    redis.call('HSET', KEYS[i], 'owner', '', 'until', 0)
  end
end
return till
