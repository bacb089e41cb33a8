-- Removes a deleted task's held results from the log, with their bytes,
-- and its retention bookkeeping. Deleting is the client's intent, not a
-- retention loss: no loss mark is raised.
--
-- KEYS[1] the log, KEYS[2] log meta, KEYS[3] evicted marks per task,
-- KEYS[4] the task's list of held ids
-- ARGV[1] the task id
local ids = redis.call('LRANGE', KEYS[4], 0, -1)
local freed = 0
for _, id in ipairs(ids) do
  local entry = redis.call('XRANGE', KEYS[1], id, id)[1]
  if entry then
    local kv = entry[2]
    for k = 1, #kv, 2 do
      if kv[k] == 'n' then freed = freed + tonumber(kv[k + 1]) end
    end
    redis.call('XDEL', KEYS[1], id)
  end
end
if freed > 0 then redis.call('HINCRBY', KEYS[2], 'bytes', -freed) end
redis.call('DEL', KEYS[4])
redis.call('HDEL', KEYS[3], ARGV[1])
return freed
