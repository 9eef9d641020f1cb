-- push.lua: push batches onto the queue, each at most once, while the queue has room.
--
-- KEYS[1]  the queue (list; producers LPUSH, consumers take from the right)
-- KEYS[2]  the run's "pushed" bitmap, one bit per batch sequence number
-- ARGV[1]  the queue's bound in elements; 0 means unbounded
-- ARGV[2], ARGV[3], ...  pairs of (batch sequence number, element)
--
-- Returns the number of pairs handled, in order: pushed now, or found already pushed (a re-sent
-- call after a lost reply). It stops at the first pair that does not fit under the bound; the
-- caller waits and sends the rest again. A batch's bit is set only after its element is in the
-- list, so a failure in between can duplicate an element (harmless: the commit of a batch is
-- once-only) but never lose one.
local bound = tonumber(ARGV[1])
local handled = 0
for i = 2, #ARGV, 2 do
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
