-- Compare-and-set of task hashes of ONE shard, with that shard's due and
-- id indexes: every key it touches carries the shard's hash tag.
--
-- KEYS[1] the shard's due index (zset id -> next fire time, ms)
-- KEYS[2] the shard's id index (zset id, for listing in id order)
-- KEYS[2+i] task i's hash
-- ARGV[1] n; then per task 7 values:
--   id, expected rev ('' = must not exist), rec ('' = delete),
--   due ms ('' = not due), state, next_run_at (text, for operators),
--   the rev a created hash starts at ('' = 1; a restore starts it above
--   every rev the task had, so a step that read it before cannot match)
-- then, optionally, '1' when the first task is created for a RegisterTask
-- request id: KEYS[3+n] is that id's key (its own hash slot: with Redis
-- Cluster this call would span slots, like record.lua). If the key already
-- names a task, nothing is written and {-1, that task's id} is returned;
-- else, once the task is written, the key names it for good. So a request
-- id and its task are written together or not at all, and two
-- registrations racing with one id make one task.
-- Each task is written only if its `rev` is the expected one (all or nothing
-- per task); `rev` then grows by one. Returns the 1-based indexes of the
-- tasks that were not written because their rev had moved.
local n = tonumber(ARGV[1])
local request = ARGV[2 + n * 7] == '1'
if request then
  local earlier = redis.call('GET', KEYS[3 + n])
  if earlier then return {-1, earlier} end
end
local conflicts = {}
for i = 1, n do
  local b = 1 + (i - 1) * 7
  local id, want, rec, due, state, nxt, base =
    ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4], ARGV[b + 5], ARGV[b + 6], ARGV[b + 7]
  local key = KEYS[2 + i]
  local have = redis.call('HGET', key, 'rev')
  local ok
  if want == '' then ok = (have == false) else ok = (have == want) end
  if not ok then
    conflicts[#conflicts + 1] = i
  elseif rec == '' then
    redis.call('DEL', key)
    redis.call('ZREM', KEYS[1], id)
    redis.call('ZREM', KEYS[2], id)
  else
    local rev = 1
    if have then
      rev = tonumber(have) + 1
    elseif base ~= '' then
      rev = tonumber(base)
    end
    redis.call('HSET', key, 'rev', rev, 'rec', rec, 'state', state, 'next', nxt)
    if due == '' then
      redis.call('ZREM', KEYS[1], id)
    else
      redis.call('ZADD', KEYS[1], due, id)
    end
    if have == false then
      redis.call('ZADD', KEYS[2], 0, id)
    end
  end
end
if request and #conflicts == 0 then
  redis.call('SET', KEYS[3 + n], ARGV[2])
end
return conflicts
