-- push.lua: push batches onto the queue, each at most once, while the queue has room, and only
-- for the producer that holds the run's current epoch.
--
-- KEYS[1]  the queue (list; producers LPUSH, consumers take from the right)
-- KEYS[2]  the run's "pushed" bitmap, one bit per batch sequence number
-- KEYS[3]  the run's meta hash; its field "epoch" is the epoch of the producer that owns the run
-- ARGV[1]  the queue's bound in elements; 0 means unbounded
-- ARGV[2]  the calling producer's epoch (given to it when it started or resumed the run)
-- ARGV[3], ARGV[4], ...  pairs of (batch sequence number, element)
--
-- Returns -1, having written nothing, when the run's epoch is not ARGV[2]: another producer has
-- resumed the run since, and this one is fenced (a zombie producer cannot push behind the back
-- of the one that took over). Otherwise returns the number of pairs handled, in order: pushed
-- now, or found already pushed (by a re-sent call after a lost reply, or by an earlier attempt
-- of the run). It stops at the first pair that does not fit under the bound; the caller waits
-- and sends the rest again. A batch's bit is set only after its element is in the list, so a
-- failure in between can duplicate an element (harmless: the commit of a batch is once-only)
-- but never lose one.
if redis.call('HGET', KEYS[3], 'epoch') ~= ARGV[2] then
    return -1
end
local bound = tonumber(ARGV[1])
local handled = 0
for i = 3, #ARGV, 2 do
    local seq = ARGV[i]
    if redis.call('GETBIT', KEYS[2], seq) == 0 then
        if bound > 0 and redis.call('LLEN', KEYS[1]) >= bound then
            return handled
        end
        redis.call('LPUSH', KEYS[1], ARGV[i + 1])
        redis.call('SETBIT', KEYS[2], seq, 1)
    end
    handled = handled + 1
end
return handled
