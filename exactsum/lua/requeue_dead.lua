-- requeue_dead.lua: give a dead-lettered batch another chance (operator command).
--
-- KEYS[1]  the dead-letter list holding the entry
-- KEYS[2]  the queue
-- KEYS[3]  the run's "done" bitmap
-- KEYS[4]  the run's dead-lettered item count
-- KEYS[5]  the run's attempts hash
--          (KEYS[3] to KEYS[5] are not touched when ARGV[3] is ""; pass any key)
-- ARGV[1]  the entry, exactly as stored
-- ARGV[2]  the element to push back (decoded from the entry by the caller)
-- ARGV[3]  the batch sequence number, or "" for an element that belongs to no run
-- ARGV[4]  the number of items in the batch
--
-- Returns 1 if requeued, 0 if the entry was no longer there (someone else handled it).
-- The batch becomes unresolved again (its done bit cleared, its items no longer counted as dead
-- letters, its attempts reset) in the same atomic step that puts it on the queue.
if not redis.call('LPOS', KEYS[1], ARGV[1]) then
    return 0
end
redis.call('LPUSH', KEYS[2], ARGV[2])
if ARGV[3] ~= '' then
    redis.call('SETBIT', KEYS[3], ARGV[3], 0)
    redis.call('DECRBY', KEYS[4], ARGV[4])
    redis.call('HDEL', KEYS[5], ARGV[3])
end
redis.call('LREM', KEYS[1], 1, ARGV[1])
return 1
