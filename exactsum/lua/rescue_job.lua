-- rescue_job.lua: put a job id stranded in RQ's intermediate queue back on RQ's queue.
--
-- An RQ worker takes a job id by moving it from the queue to the intermediate queue (BLMOVE),
-- then records the job as started and removes the id from there. A worker that dies, or whose
-- connection drops, between the two (a Redis restart does it: the move is carried out, its reply
-- is lost) leaves the id in the intermediate queue, where RQ's own maintenance finds it only a
-- minute later and counts it as a failed attempt. The reclaimer calls this sooner, for an id it
-- saw there, not started, on passes several seconds apart.
--
-- KEYS[1]  RQ's intermediate queue (list of job ids)
-- KEYS[2]  RQ's queue (list of job ids; RQ pushes on the right)
-- KEYS[3]  RQ's note of when its maintenance first saw the id there (deleted: the id's next
--          pass through the intermediate queue must not look a minute old to RQ)
-- ARGV[1]  the job id
--
-- Returns 1 if the id was moved back, 0 if it had left the intermediate queue meanwhile.
-- Should the worker that took it only have been slow, the job runs twice; its batch still
-- counts once (commit_job.lua).
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then
    return 0
end
redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[3])
return 1
