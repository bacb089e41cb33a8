-- Compare-and-set of task hashes of ONE shard, with that shard's due and
-- id indexes: every key it touches carries the shard's hash tag.
--
-- KEYS[1] the shard's due index (zset id -> next fire time, ms)
-- KEYS[2] the shard's id index (zset id, for listing in id order)
-- KEYS[3] the shard's lease (see lease.lua)
-- KEYS[3+i] task i's hash; KEYS[3+n+i] task i's tombstone
-- ARGV[1] n; ARGV[2] the lease fence the caller holds ('' = the write is
--   not fenced: control calls, which any replica may make); ARGV[3] the
--   caller's node id; ARGV[4] the changes channel ('' = no notices);
--   ARGV[5] how long a tombstone is kept (ms)
-- then per task 10 values:
--   id, expected rev ('' = must not exist; 'r' = a restore, below),
--   rec ('' = delete), due ms ('' = not due), state, next_run_at (text,
--   for operators), the rev a created hash starts at ('' = 1; a restore
--   starts it above every rev the task had, so a step that read it before
--   cannot match), a notice ('' = none: once written, "<node> <id> <rev>
--   <notice>" is published on the channel, so the other replicas re-read
--   the task), and the task's stamp: registration time (ms) and version,
--   which order its states across replicas (a deleted task's stamp is its
--   last version plus one)
-- then, optionally, '1' when the first task is created for a RegisterTask
-- request id: KEYS[4+2n] is that id's key (its own hash slot: with Redis
-- Cluster this call would span slots, like record.lua). If the key already
-- names a task, nothing is written and {-1, that task's id} is returned;
-- else, once the task is written, the key names it for good. So a request
-- id and its task are written together or not at all, and two
-- registrations racing with one id make one task.
-- A fenced call whose fence is not the lease's current one, or whose lease
-- has expired by Redis's clock, writes nothing and returns {-2}: the
-- caller no longer owns the shard. Any call but a write-back (its first
-- task expected 'r') within the shard's write-back window (the lease's
-- `quiet`, see quiet.lua) writes nothing and returns {-3}.
-- A delete leaves a tombstone (the task's stamp) for the time given.
-- A restore (Redis came back empty; each replica writes back what it
-- holds) writes a task, or a tombstone, where there is none, or over
-- another replica's write-back (`restored` = '1'; any other write clears
-- it) with an older stamp (then, for one version, a lower rev): the newest
-- state any replica held wins, a tombstone beats the older states of its
-- task, and a write-back that comes late never undoes a later decision.
-- Each task is written only if its `rev` is the expected one (all or nothing
-- per task); `rev` then grows by one. Returns the 1-based indexes of the
-- tasks that were not written because their rev had moved.
local n = tonumber(ARGV[1])
local fence, node, channel, tomb_ms = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local W = 10
local request = ARGV[6 + n * W] == '1'
local l = redis.call('HMGET', KEYS[3], 'owner', 'until', 'fence', 'quiet')
if fence ~= '' or l[4] then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  -- The write-back window (quiet.lua): only the write-back writes.
  if l[4] and now < (tonumber(l[4]) or 0) and ARGV[7] ~= 'r' then
    return {-3}
  end
  if fence ~= '' and (l[1] ~= node or l[3] ~= fence or tonumber(l[2] or '0') < now) then
    return {-2}
  end
end
if request then
  local earlier = redis.call('GET', KEYS[4 + 2 * n])
  if earlier then return {-1, earlier} end
end
-- Whether stamp (b, v) is newer than (ob, ov).
local function newer(b, v, ob, ov)
  return b > ob or (b == ob and v > ov)
end
local conflicts = {}
for i = 1, n do
  local a = 5 + (i - 1) * W
  local id, want, rec, due, state, nxt, base, notice, born, ver =
    ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5],
    ARGV[a + 6], ARGV[a + 7], ARGV[a + 8], tonumber(ARGV[a + 9]), tonumber(ARGV[a + 10])
  local key, tomb = KEYS[3 + i], KEYS[3 + n + i]
  local have = redis.call('HGET', key, 'rev')
  local ok
  if want == 'r' then
    ok = true
    local t = redis.call('GET', tomb)
    if t then
      -- A tombstone another write-back wrote (' r') is weighed; one a
      -- delete wrote since is a decision, never undone.
      local tb, tv = string.match(t, '(%d+) (%d+)')
      ok = string.sub(t, -2) == ' r' and newer(born, ver, tonumber(tb), tonumber(tv))
    end
    if ok and have then
      local h = redis.call('HMGET', key, 'born', 'ver', 'restored')
      local hb, hv = tonumber(h[1] or '0'), tonumber(h[2] or '0')
      -- Only another replica's write-back is replaced, never a state a
      -- step decided since (its revs are of the new store, no longer
      -- comparable). One version held by two replicas: the later write (a
      -- higher rev of the lost store) wins; base is that rev plus one.
      ok = h[3] == '1' and (newer(born, ver, hb, hv)
        or (born == hb and ver == hv and (tonumber(base) or 0) > tonumber(have)))
    end
  elseif want == '' then
    ok = (have == false)
  else
    ok = (have == want)
  end
  if not ok then
    conflicts[#conflicts + 1] = i
  elseif rec == '' then
    redis.call('DEL', key)
    redis.call('ZREM', KEYS[1], id)
    redis.call('ZREM', KEYS[2], id)
    local mark = ''
    if want == 'r' then mark = ' r' end
    redis.call('SET', tomb, born .. ' ' .. ver .. mark, 'PX', tomb_ms)
    if notice ~= '' and channel ~= '' then
      redis.call('PUBLISH', channel, node .. ' ' .. id .. ' 0 ' .. notice)
    end
  else
    local rev = 1
    if base ~= '' then rev = tonumber(base) end
    if have and tonumber(have) + 1 > rev then rev = tonumber(have) + 1 end
    local restored = ''
    if want == 'r' then restored = '1' end
    redis.call('HSET', key, 'rev', rev, 'rec', rec, 'state', state, 'next', nxt,
      'born', born, 'ver', ver, 'restored', restored)
    if due == '' then
      redis.call('ZREM', KEYS[1], id)
    else
      redis.call('ZADD', KEYS[1], due, id)
    end
    if have == false then
      redis.call('ZADD', KEYS[2], 0, id)
    end
    if notice ~= '' and channel ~= '' then
      redis.call('PUBLISH', channel, node .. ' ' .. id .. ' ' .. rev .. ' ' .. notice)
    end
  end
end
if request and #conflicts == 0 then
  redis.call('SET', KEYS[4 + 2 * n], ARGV[6])
end
return conflicts
