-- Appends a batch of results to the log, applies retention, and writes the
-- tasks they settle with a compare-and-set, all or nothing: if any task's
-- rev moved, nothing is written and the conflicting indexes are returned as
-- {0, i, ...}; else {1, id1, id2, ...}, the stream ids of the results.
--
-- This is the one script that spans hash slots: the log keys share the
-- `{log}` tag, the task hashes carry their shard's tag. A move to Redis
-- Cluster splits it (see the README's key layout).
--
-- KEYS[1] the log (stream), KEYS[2] log meta (hash: bytes, evicted, last),
-- KEYS[3] evicted marks per task (hash task -> highest id dropped),
-- KEYS[4] the store's epoch, KEYS[5] the batch's applied-marker,
-- KEYS[6] until when the store is being written back (quiet.lua): nothing
--   is recorded before ({4} is returned), KEYS[6+t] task t's hash
-- ARGV[1] hist key prefix (+ task id = list of the task's held ids)
-- ARGV[2] per-task cap, ARGV[3] total cap, ARGV[4] byte cap, ARGV[5] max age ms
-- ARGV[6] the epoch the caller read its tasks under: if the store's epoch
--   is another (Redis came back empty and is not restored yet, or was
--   restored since), nothing is written and {2} is returned
-- ARGV[7] how long the applied-marker is kept (s; 0: none is left): a
--   retry of a batch whose reply was lost finds it and gets
--   {3, promoted runs}, nothing appended twice
-- ARGV[8] r = number of results, then per result 5 values: task id,
--   payload, bytes, the fencing value of the claim that produced it (0: none),
--   and 1 if that claim had lapsed (its run record was gone), else 0
-- then the number of tasks t, then per task 3 values:
--   expected rev, rec, index (1-based) of the result that is its last, or 0
-- then the number of ended tasks, then their ids: each gets an end entry
-- (field `e`) after the results, so a reader learns of the end in log order
-- then the buffered runs the batch promotes (`task run` pairs, space
-- separated), kept in the applied-marker
local log, meta, evicted = KEYS[1], KEYS[2], KEYS[3]
local hist = ARGV[1]
local per_task, total, max_bytes, max_age =
  tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
if redis.call('GET', KEYS[4]) ~= ARGV[6] then return {2} end
local quiet = tonumber(redis.call('GET', KEYS[6]) or '0') or 0
if quiet > 0 then
  local now = redis.call('TIME')
  if tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) < quiet then return {4} end
end
local applied = redis.call('GET', KEYS[5])
if applied then return {3, applied} end
local r = tonumber(ARGV[8])
local tbase = 9 + r * 5
local t = tonumber(ARGV[tbase])

local conflicts = {0}
for i = 1, t do
  local want = ARGV[tbase + 1 + (i - 1) * 3]
  if redis.call('HGET', KEYS[6 + i], 'rev') ~= want then
    conflicts[#conflicts + 1] = i
  end
end
if #conflicts > 1 then return conflicts end

local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function later(a, b)
  if not b then return true end
  local am, as = parse(a)
  local bm, bs = parse(b)
  return am > bm or (am == bm and as > bs)
end
local bytes = tonumber(redis.call('HGET', meta, 'bytes') or '0')
local evicted_max = redis.call('HGET', meta, 'evicted')
if evicted_max == false then evicted_max = nil end

-- Drops one held result: from the log, its byte count, and (unless its task
-- list was already popped) its task's list; raises the loss marks. An end
-- entry (`is_end`) is no result: dropping it loses nothing a reader replays.
local function drop(id, task, n, popped, is_end)
  redis.call('XDEL', log, id)
  bytes = bytes - n
  if is_end then return end
  if later(id, evicted_max) then evicted_max = id end
  local mark = redis.call('HGET', evicted, task)
  if later(id, mark or nil) then redis.call('HSET', evicted, task, id) end
  if not popped then redis.call('LREM', hist .. task, 1, id) end
end
local function fields(entry)
  local f = {}
  local kv = entry[2]
  for k = 1, #kv, 2 do f[kv[k]] = kv[k + 1] end
  return f
end

local ids = {1}
for i = 1, r do
  local b = 9 + (i - 1) * 5
  local task, payload, n = ARGV[b], ARGV[b + 1], tonumber(ARGV[b + 2])
  local id
  if ARGV[b + 4] == '1' then
    id = redis.call('XADD', log, '*', 't', task, 'n', n, 'f', ARGV[b + 3], 'l', 1, 'r', payload)
  else
    id = redis.call('XADD', log, '*', 't', task, 'n', n, 'f', ARGV[b + 3], 'r', payload)
  end
  ids[#ids + 1] = id
  bytes = bytes + n
  local list = hist .. task
  redis.call('RPUSH', list, id)
  while redis.call('LLEN', list) > per_task do
    local old = redis.call('LPOP', list)
    local entry = redis.call('XRANGE', log, old, old)
    if entry[1] then drop(old, task, tonumber(fields(entry[1]).n), true, false) end
  end
end

local now = redis.call('TIME')
local oldest_kept_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) - max_age
-- The newest result always stays, whatever its size or age.
while redis.call('XLEN', log) > 1 do
  local entry = redis.call('XRANGE', log, '-', '+', 'COUNT', 1)[1]
  local ms = parse(entry[1])
  if not (redis.call('XLEN', log) > total or bytes > max_bytes or ms < oldest_kept_ms) then
    break
  end
  local f = fields(entry)
  -- An end entry (`e`) holds no output and no task list entry.
  drop(entry[1], f.t or f.e, tonumber(f.n or '0'), false, f.e ~= nil)
end

redis.call('HSET', meta, 'bytes', bytes)
if r > 0 then redis.call('HSET', meta, 'last', ids[#ids]) end
if evicted_max then redis.call('HSET', meta, 'evicted', evicted_max) end

for i = 1, t do
  local b = tbase + 1 + (i - 1) * 3
  local key = KEYS[6 + i]
  redis.call('HINCRBY', key, 'rev', 1)
  -- Decided here: no longer a write-back another may replace.
  redis.call('HSET', key, 'rec', ARGV[b + 1], 'restored', '')
  local last = tonumber(ARGV[b + 2])
  if last > 0 then redis.call('HSET', key, 'lc', ids[1 + last]) end
end

local ebase = tbase + 1 + t * 3
local ne = tonumber(ARGV[ebase])
for i = 1, ne do
  local id = redis.call('XADD', log, '*', 'e', ARGV[ebase + i])
  redis.call('HSET', meta, 'last', id)
end
-- The marker holds the buffered runs this batch promoted, so a retry can
-- still hand them out.
if tonumber(ARGV[7]) > 0 then
  redis.call('SET', KEYS[5], ARGV[ebase + ne + 1], 'EX', tonumber(ARGV[7]))
end
return ids
