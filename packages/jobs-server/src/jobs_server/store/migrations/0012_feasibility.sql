-- Deadline feasibility (jobs_server/feasibility.py, forecast.py): what an enqueue answer's
-- expected start and the forecast read, kept without counting over `jobs`.
--   feasibility_pending  pending jobs per (use case, priority, deadline second): the backlog in
--                        claim order, summed into prefix sums by the API;
--   feasibility_load     per use case: running jobs, and running attempts ended so far with
--                        their summed time in running (for throughput and mean duration), plus
--                        the rates the leader measured from them;
--   *_deltas             what each statement on `jobs` changed, appended by the statement-level
--                        triggers below (plain inserts into unindexed tables: concurrent
--                        statements never wait on each other here) and folded into the two
--                        tables above by the scheduler leader about once a second.
-- A session with jobs.feasibility = 'off' (JOBS_FEASIBILITY=off) skips the triggers.

CREATE TABLE feasibility_pending (
    use_case text NOT NULL,
    priority integer NOT NULL,
    bucket   bigint NOT NULL,  -- floor(epoch seconds of the deadline)
    n        bigint NOT NULL,
    PRIMARY KEY (use_case, priority, bucket)
);

CREATE TABLE feasibility_load (
    use_case      text PRIMARY KEY,
    running       bigint NOT NULL DEFAULT 0,
    finished      bigint NOT NULL DEFAULT 0,   -- running attempts ended (not released)
    busy_seconds  double precision NOT NULL DEFAULT 0,  -- their summed dispatch-to-end time
    throughput    double precision,   -- attempts ended per second, last measured window
    mean_duration double precision,   -- seconds per attempt, last measured window
    rates_at      timestamptz
);

CREATE TABLE feasibility_pending_deltas (
    use_case text NOT NULL,
    priority integer NOT NULL,
    bucket   bigint NOT NULL,
    n        bigint NOT NULL
);

CREATE TABLE feasibility_load_deltas (
    use_case     text NOT NULL,
    running      bigint NOT NULL,
    finished     bigint NOT NULL,
    busy_seconds double precision NOT NULL
);

-- The deadline's epoch second, within the range of timestamps the API takes (a row written by
-- hand with an infinite deadline must not break the statement that changes it).
CREATE FUNCTION jobs_deadline_second(deadline timestamptz) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT floor(extract(epoch FROM least(greatest(deadline, '1970-01-01 00:00:00+00'),
                                          '9999-01-01 00:00:00+00')))::bigint
$$;

CREATE FUNCTION jobs_feasibility_track() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('jobs.feasibility', true) = 'off' THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'INSERT' THEN
        INSERT INTO feasibility_pending_deltas (use_case, priority, bucket, n)
        SELECT use_case, priority, jobs_deadline_second(deadline), count(*)
        FROM new_rows WHERE status = 'pending' GROUP BY 1, 2, 3;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO feasibility_pending_deltas (use_case, priority, bucket, n)
        SELECT use_case, priority, jobs_deadline_second(deadline), -count(*)
        FROM old_rows WHERE status = 'pending' GROUP BY 1, 2, 3;
        INSERT INTO feasibility_load_deltas (use_case, running, finished, busy_seconds)
        SELECT use_case, -count(*), 0, 0 FROM old_rows WHERE status = 'running' GROUP BY 1;
    ELSE
        INSERT INTO feasibility_pending_deltas (use_case, priority, bucket, n)
        SELECT use_case, priority, bucket, sum(n) FROM (
            SELECT use_case, priority, jobs_deadline_second(deadline) AS bucket,
                   -1 AS n
            FROM old_rows WHERE status = 'pending'
            UNION ALL
            SELECT use_case, priority, jobs_deadline_second(deadline), 1
            FROM new_rows WHERE status = 'pending'
        ) d
        GROUP BY 1, 2, 3 HAVING sum(n) <> 0;
        -- A released claim (attempts given back) frees its slot but ran nothing: not ended.
        INSERT INTO feasibility_load_deltas (use_case, running, finished, busy_seconds)
        SELECT n.use_case,
               sum((n.status = 'running')::int - (o.status = 'running')::int),
               count(*) FILTER (WHERE o.status = 'running' AND n.attempts = o.attempts),
               coalesce(sum(extract(epoch FROM n.updated_at - o.dispatched_at))
                   FILTER (WHERE o.status = 'running' AND n.attempts = o.attempts
                             AND isfinite(n.updated_at) AND isfinite(o.dispatched_at)), 0)
        FROM old_rows o JOIN new_rows n USING (id)
        WHERE n.status IS DISTINCT FROM o.status
          AND 'running' IN (o.status, n.status)
        GROUP BY n.use_case;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_feasibility_insert_trg AFTER INSERT ON jobs
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION jobs_feasibility_track();
CREATE TRIGGER jobs_feasibility_update_trg AFTER UPDATE ON jobs
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION jobs_feasibility_track();
CREATE TRIGGER jobs_feasibility_delete_trg AFTER DELETE ON jobs
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION jobs_feasibility_track();

-- The jobs already there (the migration's transaction sees every committed row, and the
-- triggers above see every later change).
INSERT INTO feasibility_pending (use_case, priority, bucket, n)
SELECT use_case, priority, jobs_deadline_second(deadline), count(*)
FROM jobs WHERE status = 'pending' GROUP BY 1, 2, 3;

INSERT INTO feasibility_load (use_case, running)
SELECT use_case, count(*) FROM jobs WHERE status = 'running' GROUP BY 1;
