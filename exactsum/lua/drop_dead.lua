-- drop_dead.lua: give up on a dead letter for good (operator command).
--
-- KEYS[1]  the dead-letter list holding the entry
-- KEYS[2]  the list of dropped entries
-- ARGV[1]  the entry, exactly as stored
--
-- Returns 1 if moved, 0 if the entry was no longer there. A dropped entry is kept (and its
-- items stay counted as dead-lettered), so the run's audit still accounts for every item.
if not redis.call('LPOS', KEYS[1], ARGV[1]) then
    return 0
end
redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('LREM', KEYS[1], 1, ARGV[1])
return 1
