-- The feasibility summary's deltas for inserted jobs are written by the two statements that
-- insert jobs (enqueue_jobs and enqueue_ticks in queries.sql, both through jobs_enqueue), in
-- the statement itself, instead of by a statement-level trigger: the trigger's call and its
-- transition table cost about 180 us on a one-job enqueue, the statement's own insert about
-- 60 us. Updates and deletes keep their triggers (0012): many statements change status.
-- A job inserted by any other statement is not in the summary until the leader's next
-- rebuild; nothing in the server does that.
DROP TRIGGER jobs_feasibility_insert_trg ON jobs;
