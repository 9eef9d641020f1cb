-- dead_letter_job.lua: resolve one RQ job's batch as dead-lettered, exactly once.
--
-- KEYS[1]  the run's "done" bitmap
-- KEYS[2]  the run's dead-letter list
-- KEYS[3]  the run's dead-lettered item count
-- KEYS[4]  the run's "batches" hash (sequence number -> element)
-- KEYS[5]  the run's "leases" hash (sequence number -> lease; absent means 0)
-- ARGV[1]  the batch sequence number
-- ARGV[2]  the number of items in the batch
-- ARGV[3]  the dead-letter entry (JSON: reason, attempts, element, consumer, time)
-- ARGV[4]  the lease the caller read together with the element
--
-- Returns 1 dead-lettered now, 0 already resolved, -1 fenced (the lease moved on: the job was
-- put back for another attempt since the caller read it; nothing is written).
if redis.call('GETBIT', KEYS[1], ARGV[1]) == 1 then
    return 0
end
if (redis.call('HGET', KEYS[5], ARGV[1]) or '0') ~= ARGV[4] then
    return -1
end
redis.call('RPUSH', KEYS[2], ARGV[3])
redis.call('INCRBY', KEYS[3], ARGV[2])
redis.call('SETBIT', KEYS[1], ARGV[1], 1)
redis.call('HDEL', KEYS[4], ARGV[1])
return 1
