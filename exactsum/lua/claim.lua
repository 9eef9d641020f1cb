-- claim.lua: move up to n elements from the queue into one thread's in-flight list, at once.
--
-- KEYS[1]  the queue (producers LPUSH; consumers take from the right)
-- KEYS[2]  the claiming thread's in-flight list
-- ARGV[1]  n, the most elements to move
--
-- Returns the elements moved, oldest first (possibly none: the queue was empty). It is n
-- non-blocking LMOVEs in one atomic step: each element is in exactly one place, the queue or
-- the list, at every moment, so a lost reply leaves the elements in the list, where the thread
-- finds them when it re-reads it, and a dead owner's list is reclaimed whole as before. When
-- nothing is there the worker falls back to the blocking BLMOVE of a single element.
local moved = {}
for _ = 1, tonumber(ARGV[1]) do
    local element = redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT')
    if not element then
        break
    end
    moved[#moved + 1] = element
end
return moved
