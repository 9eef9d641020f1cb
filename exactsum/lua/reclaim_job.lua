-- reclaim_job.lua: put back the job of an RQ execution whose worker is dead, with a new lease,
-- or dead-letter its batch when the job has no retries left.
--
-- An RQ worker that dies in the middle of a job leaves the execution in RQ's StartedJobRegistry
-- until its entry expires (the job's timeout plus a minute) and RQ's maintenance notices. The
-- consumers notice sooner (a worker process that exited, or a consumer whose heartbeat lapsed)
-- and call this. It counts the attempt against the job's own RQ retries, as RQ does when a job
-- raises, and raises the batch's lease, so the dead execution can never commit if it was only
-- paused. All of it happens in one step: there is no moment when the batch is neither queued,
-- nor running, nor resolved.
--
-- KEYS[1]  RQ's StartedJobRegistry of the queue (zset of "<job id>:<execution id>")
-- KEYS[2]  RQ's queue (list of job ids; RQ pushes on the right)
-- KEYS[3]  the job's hash (RQ's record: status, retries_left, ...)
-- KEYS[4]  the run's "done" bitmap
-- KEYS[5]  the run's "leases" hash (sequence number -> lease)
-- KEYS[6]  the run's "batches" hash (sequence number -> element)
-- KEYS[7]  the run's dead-letter list
-- KEYS[8]  the run's dead-lettered item count
-- KEYS[9]  the count of jobs put back from dead workers (stats)
-- ARGV[1]  the execution's registry member
-- ARGV[2]  the job id
-- ARGV[3]  the batch sequence number
-- ARGV[4]  the number of items in the batch
-- ARGV[5]  the dead-letter entry to write if the job has no retries left (JSON)
--
-- Returns {status, lease}:
--   1  put back on the queue (at the tail, behind what waits), with one retry fewer
--   2  its retries were used up (or RQ's record of it is gone): dead-lettered
--   0  nothing to put back: the batch is resolved (the entry is removed), or it is not a
--      batch of a run of ours (nothing is touched), or the execution was already handled
-- The execution leaves the registry in the same step, so two consumers that both saw the dead
-- worker cannot both put the job back.
if redis.call('GETBIT', KEYS[4], ARGV[3]) == 1 then
    -- Resolved already (the worker died after its commit, before RQ recorded the end): only
    -- the dead execution's entry goes, which RQ would otherwise show as running for minutes.
    redis.call('ZREM', KEYS[1], ARGV[1])
    return {0, 0}
end
if redis.call('HEXISTS', KEYS[6], ARGV[3]) == 0 then
    return {0, 0}
end
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then
    return {0, 0}
end
local lease = redis.call('HINCRBY', KEYS[5], ARGV[3], 1)
local left = tonumber(redis.call('HGET', KEYS[3], 'retries_left') or '0') or 0
if left > 0 and redis.call('EXISTS', KEYS[3]) == 1 then
    redis.call('HSET', KEYS[3], 'status', 'queued', 'retries_left', left - 1)
    redis.call('RPUSH', KEYS[2], ARGV[2])
    redis.call('INCR', KEYS[9])
    return {1, lease}
end
redis.call('RPUSH', KEYS[7], ARGV[5])
redis.call('INCRBY', KEYS[8], ARGV[4])
redis.call('SETBIT', KEYS[4], ARGV[3], 1)
redis.call('HDEL', KEYS[6], ARGV[3])
if redis.call('EXISTS', KEYS[3]) == 1 then
    redis.call('HSET', KEYS[3], 'status', 'failed')
end
return {2, lease}
