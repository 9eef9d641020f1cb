-- dead_letter.lua: resolve one claimed batch of a run as dead-lettered, exactly once.
--
-- KEYS[1]  the thread's in-flight list (holds the claim)
-- KEYS[2]  the run's "done" bitmap
-- KEYS[3]  the run's dead-letter list
-- KEYS[4]  the run's dead-lettered item count
-- ARGV[1]  the element exactly as claimed
-- ARGV[2]  the batch sequence number
-- ARGV[3]  the number of items in the batch
-- ARGV[4]  the dead-letter entry (JSON: reason, element, consumer, time)
--
-- Returns {status, elements left in the in-flight list} with the statuses of commit.lua:
--   1 dead-lettered now, 0 already resolved (claim dropped), -1 fenced (claim gone, nothing done).
-- The entry is pushed before the claim is removed, so a failure can only leave a duplicate entry.
local claimed = redis.call('LPOS', KEYS[1], ARGV[1])
if redis.call('GETBIT', KEYS[2], ARGV[2]) == 1 then
    if claimed then
        redis.call('LREM', KEYS[1], 1, ARGV[1])
    end
    return {0, redis.call('LLEN', KEYS[1])}
end
if not claimed then
    return {-1, redis.call('LLEN', KEYS[1])}
end
redis.call('RPUSH', KEYS[3], ARGV[4])
redis.call('INCRBY', KEYS[4], ARGV[3])
redis.call('SETBIT', KEYS[2], ARGV[2], 1)
redis.call('LREM', KEYS[1], 1, ARGV[1])
return {1, redis.call('LLEN', KEYS[1])}
