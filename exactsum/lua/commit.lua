-- commit.lua: count one claimed batch into its run's sum, exactly once, or refuse.
--
-- KEYS[1]  the committing thread's in-flight list (holds the claim)
-- KEYS[2]  the run's meta hash (must exist: a batch of an unknown run is not counted)
-- KEYS[3]  the run's "done" bitmap, one bit per batch sequence number
-- KEYS[4]  the run's sum
-- KEYS[5]  the run's committed item count
-- KEYS[6]  the run's per-consumer item counts (hash)
-- KEYS[7]  the run's count of refused (stale) commits
-- ARGV[1]  the element exactly as claimed
-- ARGV[2]  the batch sequence number
-- ARGV[3]  the number of items in the batch
-- ARGV[4]  the batch's sum, in decimal (computed by the consumer; Lua numbers are doubles and
--          would round sums past 2^53, so no arithmetic on it happens here)
-- ARGV[5]  the committing consumer's id
--
-- Returns {status, elements left in the in-flight list}:
--   1   counted now
--   0   the batch was already counted (by a re-sent commit of ours, or by another consumer after
--       a reclaim); our claim, if still there, is removed and nothing is added
--  -1   fenced: the claim is no longer in our in-flight list (reclaimed while we were away) and
--       the batch is not counted yet; nothing is written, whoever holds it now will count it
--  -2   the run is unknown (no meta); nothing is written, the caller dead-letters the element
--  -3   the sum would leave signed 64 bits; nothing is written, the caller dead-letters it
--
-- Order matters because scripts do not roll back: every check first, then INCRBY on the sum (the
-- only write that can fail), then the writes that cannot.
local claimed = redis.call('LPOS', KEYS[1], ARGV[1])
if redis.call('GETBIT', KEYS[3], ARGV[2]) == 1 then
    if claimed then
        redis.call('LREM', KEYS[1], 1, ARGV[1])
    end
    redis.call('INCR', KEYS[7])
    return {0, redis.call('LLEN', KEYS[1])}
end
if not claimed then
    redis.call('INCR', KEYS[7])
    return {-1, redis.call('LLEN', KEYS[1])}
end
if redis.call('EXISTS', KEYS[2]) == 0 then
    return {-2, redis.call('LLEN', KEYS[1])}
end
local added = redis.pcall('INCRBY', KEYS[4], ARGV[4])
if type(added) == 'table' and added.err then
    return {-3, redis.call('LLEN', KEYS[1])}
end
redis.call('INCRBY', KEYS[5], ARGV[3])
redis.call('HINCRBY', KEYS[6], ARGV[5], ARGV[3])
redis.call('SETBIT', KEYS[3], ARGV[2], 1)
redis.call('LREM', KEYS[1], 1, ARGV[1])
return {1, redis.call('LLEN', KEYS[1])}
