-- reclaim.lua: put every element of an in-flight list back on the queue.
--
-- KEYS[1]  the heartbeat key of the list's owner
-- KEYS[2]  the in-flight list
-- KEYS[3]  the queue
-- KEYS[4]  the counter of reclaimed elements
-- ARGV[1]  "1": only if the owner's heartbeat is gone (another consumer reclaiming);
--          "0": unconditionally (the owner giving back its own claims on shutdown)
--
-- Returns the number of elements moved, or -1 if the owner is alive and ARGV[1] is "1".
-- The elements go to the queue's consuming (right) end, so they are taken next. Checking the
-- heartbeat inside the script makes the check and the move one atomic step: an owner whose
-- heartbeat comes back a moment later finds its claims gone and its commits fenced.
if ARGV[1] == '1' and redis.call('EXISTS', KEYS[1]) == 1 then
    return -1
end
local moved = 0
while redis.call('LMOVE', KEYS[2], KEYS[3], 'RIGHT', 'RIGHT') do
    moved = moved + 1
end
if moved > 0 then
    redis.call('INCRBY', KEYS[4], moved)
end
return moved
