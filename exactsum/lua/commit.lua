-- commit.lua: count claimed batches of one run into its sum, each exactly once, or refuse it.
--
-- KEYS[1]  the committing thread's in-flight list (holds the claims)
-- KEYS[2]  the run's meta hash (must exist: a batch of an unknown run is not counted)
-- KEYS[3]  the run's "done" bitmap, one bit per batch sequence number
-- KEYS[4]  the run's sum
-- KEYS[5]  the run's committed item count
-- KEYS[6]  the run's per-consumer item counts (hash)
-- KEYS[7]  the run's count of refused (stale) commits
-- ARGV[1]  the committing consumer's id
-- ARGV[2], ARGV[3], ARGV[4], ARGV[5]  one batch: the element exactly as claimed, its sequence
--          number, its number of items, and its sum in decimal (computed by the consumer; Lua
--          numbers are doubles and would round sums past 2^53, so no arithmetic on it happens
--          here); then the next batch's four, and so on (one or more batches, all of this run)
--
-- Returns {status of batch 1, ..., status of batch n, elements left in the in-flight list}:
--   1   counted now
--   0   the batch was already counted (by a re-sent commit of ours, by another consumer after
--       a reclaim, or as an earlier duplicate in this same call); our claim, if still there, is
--       removed and nothing is added
--  -1   fenced: the claim is no longer in our in-flight list (reclaimed while we were away) and
--       the batch is not counted yet; nothing is written, whoever holds it now will count it
--  -2   the run is unknown (no meta); nothing is written, the caller dead-letters the element
--  -3   the sum would leave signed 64 bits; nothing is written, the caller dead-letters it
-- Any other error of that INCRBY (NOREPLICAS from a primary with min-replicas-to-write and too
-- few replicas, OOM) is the script's error reply: it is refused for a while, not for ever, and
-- the caller retries the whole call, which is safe (the batches counted before it in this call
-- are found counted). In practice it is the script's first write, so nothing is written at all.
--
-- Each batch is judged on its own, in order, exactly as if it were committed by a call of its
-- own; several per call only save round trips (and fsyncs) when batches are small. Order matters
-- because scripts do not roll back: for each batch every check first, then INCRBY on the sum
-- (the only write that can fail), then the writes that cannot. The item counters, which cannot
-- fail, are added once at the end for all the batches counted. A script's writes reach the AOF
-- and replicas as one transaction, so a crash never leaves part of a call applied.
--
-- Claims are pushed on the left of the in-flight list and committed oldest first, so the claim
-- is looked for, and removed, from the right end (LPOS RANK -1, LREM -1): O(1) for the usual
-- case, whatever the list's length. Which copy of two identical elements goes does not matter.
local statuses = {}
local counted_items = 0
local stale = 0
local run_known = nil
for i = 2, #ARGV, 4 do
    local element, seq = ARGV[i], ARGV[i + 1]
    local claimed = redis.call('LPOS', KEYS[1], element, 'RANK', -1)
    local status
    if redis.call('GETBIT', KEYS[3], seq) == 1 then
        if claimed then
            redis.call('LREM', KEYS[1], -1, element)
        end
        stale = stale + 1
        status = 0
    elseif not claimed then
        stale = stale + 1
        status = -1
    else
        if run_known == nil then
            run_known = redis.call('EXISTS', KEYS[2]) == 1
        end
        if not run_known then
            status = -2
        else
            local added = redis.pcall('INCRBY', KEYS[4], ARGV[i + 3])
            if type(added) == 'table' and added.err then
                if not string.find(added.err, 'overflow', 1, true) then
                    return redis.error_reply(added.err)
                end
                status = -3
            else
                redis.call('SETBIT', KEYS[3], seq, 1)
                redis.call('LREM', KEYS[1], -1, element)
                counted_items = counted_items + tonumber(ARGV[i + 2])
                status = 1
            end
        end
    end
    statuses[#statuses + 1] = status
end
if counted_items > 0 then
    redis.call('INCRBY', KEYS[5], counted_items)
    redis.call('HINCRBY', KEYS[6], ARGV[1], counted_items)
end
if stale > 0 then
    redis.call('INCRBY', KEYS[7], stale)
end
statuses[#statuses + 1] = redis.call('LLEN', KEYS[1])
return statuses
