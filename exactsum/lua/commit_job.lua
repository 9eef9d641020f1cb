-- commit_job.lua: count one RQ job's batch into its run's sum, exactly once, or refuse it.
--
-- The RQ transport's counterpart of commit.lua. An RQ job names its batch; the batch's element
-- waits in the run's "batches" hash from the push until the batch is resolved, and the lease
-- the job read with it fences the commit: a job whose worker was declared dead was put back
-- with a new lease, so the old execution, if it comes back, is refused.
--
-- KEYS[1]  the run's meta hash (must exist: a batch of an unknown run is not counted)
-- KEYS[2]  the run's "done" bitmap, one bit per batch sequence number
-- KEYS[3]  the run's sum
-- KEYS[4]  the run's committed item count
-- KEYS[5]  the run's per-consumer item counts (hash)
-- KEYS[6]  the run's count of refused (stale) commits
-- KEYS[7]  the run's "batches" hash (sequence number -> element), emptied as batches resolve
-- KEYS[8]  the run's "leases" hash (sequence number -> lease; absent means 0)
-- ARGV[1]  the committing consumer's id
-- ARGV[2]  the batch sequence number
-- ARGV[3]  the number of items in the batch
-- ARGV[4]  the batch's sum in decimal (computed by the job: Lua numbers are doubles)
-- ARGV[5]  the lease the job read together with the element
--
-- Returns the status of commit.lua:
--   1  counted now
--   0  already resolved (counted or dead-lettered, by another execution of the same job)
--  -1  fenced: the lease moved on (the job was put back after its worker was declared dead);
--      nothing is written, the execution that holds the new lease counts it
--  -2  the run is unknown (no meta); nothing is written
--  -3  the sum would leave signed 64 bits; nothing is written
-- Any other error of the INCRBY (NOREPLICAS from a primary short of replicas, OOM) is returned
-- as the script's error, with nothing written (on this path the INCRBY is the first write):
-- it is refused for a while, not for ever, and the caller retries.
-- Checks first, then INCRBY on the sum (the only write that can fail), then the rest.
if redis.call('GETBIT', KEYS[2], ARGV[2]) == 1 then
    redis.call('INCR', KEYS[6])
    return 0
end
if (redis.call('HGET', KEYS[8], ARGV[2]) or '0') ~= ARGV[5] then
    redis.call('INCR', KEYS[6])
    return -1
end
if redis.call('EXISTS', KEYS[1]) == 0 then
    return -2
end
local added = redis.pcall('INCRBY', KEYS[3], ARGV[4])
if type(added) == 'table' and added.err then
    if not string.find(added.err, 'overflow', 1, true) then
        return redis.error_reply(added.err)
    end
    return -3
end
redis.call('SETBIT', KEYS[2], ARGV[2], 1)
redis.call('HDEL', KEYS[7], ARGV[2])
redis.call('INCRBY', KEYS[4], ARGV[3])
redis.call('HINCRBY', KEYS[5], ARGV[1], ARGV[3])
return 1
