-- Membership of the replicas and the leases of the shards, judged by
-- Redis's clock (TIME), in one step each replica takes every tick.
--
-- KEYS[1] members (zset node -> lease expiry ms): replicas that may own
--   shards
-- KEYS[2] runners (zset node -> lease expiry ms): replicas that may have
--   runs going (members, and those stopping that finish theirs)
-- KEYS[3] the store's compat (format.lua): a replica whose format is older
--   is refused its step (an error naming both), so a newer build that
--   cannot share the store stops it firing within a lease
-- KEYS[4] until when no shard may be taken (ms; after a write-back of a
--   Redis that came back empty: see restore.rs)
-- KEYS[5] the store's epoch: a replica that has not seen the current one
--   (Redis came back empty and it has not written back yet) is refused its
--   step, so it neither takes a shard from an empty Redis nor learns from
--   it that it is alone
-- KEYS[5+s+1] shard s's lease (hash: owner, until ms, fence)
-- ARGV[1] this replica's node id, ARGV[2] lease length (ms),
-- ARGV[3] mode: 'member' (own a share of the shards), 'draining' (own
--   none, keep running what is going), 'leave' (gone: its runner entry is
--   expired at once, at 0, so the next member's step reports it left and
--   gives up any run it left behind)
-- ARGV[4] the changes channel: told when anything moved (a new runner
--   included: a replica alone stops telling changes, see lease.rs), so the
--   others take their step at once instead of at their next tick
-- ARGV[5] this replica's store format, ARGV[6] the epoch it holds
--
-- Shard s belongs to the (s mod n)-th of the n live members in node-id
-- order. A member holding a shard that is no longer its own hands it
-- straight to its new owner (a new fence), so a rolling restart waits for
-- no lease; a shard whose owner's lease lapsed (killed, partitioned) goes
-- to its new owner once `until` has passed. The fence grows by one with
-- each new owner and is never reset: a firing step checks both fence and
-- `until` (write_tasks.lua), so a replica whose lease lapsed cannot fire.
--
-- Returns {owned, dead, left, runners}: owned = {shard, fence, ...} of
-- this replica; dead = runners whose lease lapsed, left = runners that
-- left, both removed by this step (their runs are to be given up; each is
-- reported to exactly one replica); runners = those whose lease holds.
local me, lease, mode, channel = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
if redis.call('GET', KEYS[5]) ~= ARGV[6] then
  return redis.error_reply('EPOCH the store is not the one this replica knows (it came back empty); write it back first')
end
local compat = tonumber(redis.call('GET', KEYS[3]) or '0') or 0
if mode ~= 'leave' and compat > tonumber(ARGV[5]) then
  return redis.error_reply('FORMAT the store now requires format ' .. compat ..
    ' or later; this replica has format ' .. ARGV[5])
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local members, runners = KEYS[1], KEYS[2]
local lapsed = '(' .. now
local moved = false
local left = redis.call('ZRANGEBYSCORE', runners, '-inf', 0)
local dead = redis.call('ZRANGEBYSCORE', runners, '(0', lapsed)
if #dead + #left > 0 then
  redis.call('ZREMRANGEBYSCORE', runners, '-inf', lapsed)
end
if redis.call('ZREMRANGEBYSCORE', members, '-inf', lapsed) > 0 then moved = true end
if mode == 'member' then
  if redis.call('ZADD', members, now + lease, me) == 1 then moved = true end
  if redis.call('ZADD', runners, now + lease, me) == 1 then moved = true end
elseif mode == 'draining' then
  if redis.call('ZREM', members, me) == 1 then moved = true end
  if redis.call('ZADD', runners, now + lease, me) == 1 then moved = true end
else
  redis.call('ZREM', members, me)
  redis.call('ZADD', runners, 0, me)
  moved = true
end
local quiet = tonumber(redis.call('GET', KEYS[4]) or '0') or 0
local live = redis.call('ZRANGE', members, 0, -1)
table.sort(live)
local n = #live
local owned = {}
for s = 0, #KEYS - 6 do
  local key = KEYS[6 + s]
  local l = redis.call('HMGET', key, 'owner', 'until', 'fence')
  local owner, untl = l[1], tonumber(l[2] or '0')
  local target = false
  if n > 0 then target = live[(s % n) + 1] end
  if owner == me and target == me then
    -- Renewed, even if it had lapsed: nobody took it meanwhile (taking
    -- sets the owner), and this replica's steps were refused meanwhile.
    redis.call('HSET', key, 'until', now + lease)
    owned[#owned + 1] = s
    owned[#owned + 1] = tonumber(l[3])
  elseif owner == me then
    if target then
      redis.call('HINCRBY', key, 'fence', 1)
      redis.call('HSET', key, 'owner', target, 'until', now + lease)
    else
      redis.call('HSET', key, 'owner', '', 'until', 0)
    end
    moved = true
  elseif target == me and now >= quiet and (not owner or owner == '' or untl < now) then
    local fence = redis.call('HINCRBY', key, 'fence', 1)
    redis.call('HSET', key, 'owner', me, 'until', now + lease)
    owned[#owned + 1] = s
    owned[#owned + 1] = fence
    moved = true
  end
end
if moved then redis.call('PUBLISH', channel, me .. ' !') end
return {owned, dead, left, redis.call('ZRANGEBYSCORE', runners, '(0', '+inf')}
