-- retry.lua: a claimed batch failed processing; put it back for another attempt, or say that
-- its attempts are used up.
--
-- KEYS[1]  the thread's in-flight list (holds the claim)
-- KEYS[2]  the queue
-- KEYS[3]  the run's attempts hash (batch sequence number -> failed attempts so far)
-- KEYS[4]  the run's "done" bitmap
-- ARGV[1]  the element exactly as claimed
-- ARGV[2]  the batch sequence number
-- ARGV[3]  the most attempts allowed (--max-attempts)
--
-- Returns {status, failed attempts so far, elements left in the in-flight list}:
--   1   requeued: the element is back at the tail of the queue (after what is waiting)
--   2   attempts used up: the claim is kept; the caller dead-letters the batch
--   0   the batch is already resolved: the claim is dropped, nothing else happens
--  -1   fenced: the claim is gone (reclaimed); nothing is written
-- The failure is counted before the element moves, and the element is in the queue before the
-- claim is removed, so a failure part-way can repeat an attempt but never lose the batch.
local claimed = redis.call('LPOS', KEYS[1], ARGV[1])
if redis.call('GETBIT', KEYS[4], ARGV[2]) == 1 then
    if claimed then
        redis.call('LREM', KEYS[1], 1, ARGV[1])
    end
    return {0, 0, redis.call('LLEN', KEYS[1])}
end
if not claimed then
    return {-1, 0, redis.call('LLEN', KEYS[1])}
end
local attempts = redis.call('HINCRBY', KEYS[3], ARGV[2], 1)
if attempts >= tonumber(ARGV[3]) then
    return {2, attempts, redis.call('LLEN', KEYS[1])}
end
redis.call('LPUSH', KEYS[2], ARGV[1])
redis.call('LREM', KEYS[1], 1, ARGV[1])
return {1, attempts, redis.call('LLEN', KEYS[1])}
