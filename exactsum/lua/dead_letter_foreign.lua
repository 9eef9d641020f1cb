-- dead_letter_foreign.lua: move an element that belongs to no run from a claim to dead letters.
--
-- KEYS[1]  the thread's in-flight list (holds the claim)
-- KEYS[2]  the dead-letter list for elements of no run
-- ARGV[1]  the element exactly as claimed
-- ARGV[2]  the dead-letter entry (JSON: reason, element in base64, consumer, time)
--
-- Returns {1 moved | -1 fenced (the claim is gone), elements left in the in-flight list}.
-- The entry is pushed before the claim is removed: a failure can duplicate it, never lose it.
if not redis.call('LPOS', KEYS[1], ARGV[1]) then
    return {-1, redis.call('LLEN', KEYS[1])}
end
redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('LREM', KEYS[1], 1, ARGV[1])
return {1, redis.call('LLEN', KEYS[1])}
