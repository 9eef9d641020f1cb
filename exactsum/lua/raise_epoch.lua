-- raise_epoch.lua: write a producer attempt's epoch into a partition's copy of the run's meta,
-- never lowering it (Redis Cluster: push.lua checks the epoch in that copy).
--
-- KEYS[1]  the partition's copy of the run's meta (hash)
-- ARGV[1]  the epoch of the calling producer's attempt
-- ARGV[2], ARGV[3], ...  pairs of (field, value) written with it (the run id, the number of
--          partitions: facts that are the same for every attempt of the run)
--
-- Returns the copy's epoch after the call: ARGV[1] when it was written (the copy had a lower
-- epoch, the same, or none), or the higher epoch the copy already had, having written nothing.
-- The run's own meta and the partitions' copies are in different slots, so a resume raises them
-- one by one, after its transaction on the run's meta. A producer that stalled in the middle of
-- its own resume, and wakes after a later attempt has copied its epoch, would otherwise put its
-- older epoch back and take the partition from the newer producer; here it cannot, and its first
-- push there is fenced (push.lua returns -1) as it must be.
local current = tonumber(redis.call('HGET', KEYS[1], 'epoch') or '0')
if current > tonumber(ARGV[1]) then
    return current
end
redis.call('HSET', KEYS[1], 'epoch', ARGV[1])
for i = 2, #ARGV, 2 do
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
return tonumber(ARGV[1])
