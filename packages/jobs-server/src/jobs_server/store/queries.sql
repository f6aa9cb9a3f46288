-- Every SQL statement jobs-server runs. Each block starts with `-- name: <method>` and is
-- called by the PostgresJobStore method of the same name.

-- name: enqueue_jobs
SELECT ord, outcome, job
FROM jobs_enqueue($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13);

-- name: get_job
SELECT j FROM jobs j WHERE j.id = $1 AND ($2::text IS NULL OR j.tenant = $2);

-- name: get_job_attempts
SELECT attempt, outcome, worker_id, dispatched_at, started_at, finished_at,
       error_type, error_message, traceback
FROM job_attempts WHERE job_id = $1 ORDER BY attempt;

-- name: list_jobs
SELECT j FROM jobs j
WHERE ($1::text IS NULL OR j.tenant = $1)
  AND ($2::job_status IS NULL OR j.status = $2)
  AND ($3::text IS NULL OR j.use_case = $3)
  AND ($4::text IS NULL OR j.job_type = $4)
  AND ($5::timestamptz IS NULL OR j.created_at >= $5)
  AND ($6::timestamptz IS NULL OR j.created_at < $6)
  AND ($7::uuid IS NULL OR j.id < $7)
ORDER BY j.id DESC
LIMIT $8;

-- name: cancel_job
-- A pending job is cancelled at once; a running one is marked and ends cancelled when its
-- worker reports or its lease expires.
UPDATE jobs j SET
    status = CASE WHEN j.status = 'pending' THEN 'cancelled'::job_status ELSE j.status END,
    cancel_requested = j.cancel_requested OR j.status = 'running',
    finished_at = CASE WHEN j.status = 'pending' THEN now() ELSE j.finished_at END,
    updated_at = now()
WHERE j.id = $1 AND ($2::text IS NULL OR j.tenant = $2)
  AND j.status IN ('pending', 'running')
RETURNING j;

-- name: get_idempotency_key
SELECT request_hash, response FROM idempotency_keys WHERE tenant = $1 AND key = $2;

-- name: ping
SELECT 1;

-- name: claim_idempotency_key
INSERT INTO idempotency_keys (tenant, key, request_hash)
VALUES ($1, $2, $3)
ON CONFLICT (tenant, key) DO NOTHING
RETURNING true;

-- name: save_idempotency_result
UPDATE idempotency_keys SET response = $3 WHERE tenant = $1 AND key = $2;

-- name: get_jobs
SELECT j FROM jobs j WHERE j.id = ANY ($1::uuid[]);

-- name: claim_due_jobs
-- Lease up to the use case's free slots of its due pending jobs, earliest deadline first, then
-- priority, then age, for the current leader only (the FOR SHARE on the leader row makes a
-- takeover wait for this statement, and a deposed leader claim nothing).
-- $1 use case, $2 capacity, $3 batch limit, $4 lease seconds, $5 leader name, $6 holder, $7 epoch
WITH leader AS (
    SELECT 1 FROM scheduler_leader
    WHERE name = $5 AND holder = $6 AND epoch = $7 AND expires_at > now()
    FOR SHARE
), picked AS (
    SELECT j.id FROM jobs j
    WHERE j.use_case = $1 AND j.status = 'pending' AND j.run_at <= now()
      AND EXISTS (SELECT 1 FROM leader)
    ORDER BY j.deadline, j.priority DESC, j.id
    LIMIT least($3, greatest(0, $2 - (
        SELECT count(*) FROM jobs r WHERE r.use_case = $1 AND r.status = 'running')))
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE jobs j SET
        status = 'running',
        attempts = j.attempts + 1,
        lease_token = gen_random_uuid(),
        lease_expires_at = now() + $4 * interval '1 second',
        dispatched_at = now(),
        deadline_missed = j.deadline_missed OR j.deadline < now(),
        updated_at = now()
    -- by primary key: a join here lets the planner hash the whole table
    WHERE j.id = ANY (ARRAY(SELECT id FROM picked))
    RETURNING j.id, j.tenant, j.use_case, j.job_type, j.payload, j.attempts, j.max_attempts,
              j.lease_token, j.lease_expires_at, j.deadline, j.run_at, j.created_at,
              j.trace_context, j.priority, j.deadline < now() AS missed
), attempts AS (
    INSERT INTO job_attempts (job_id, attempt, dispatched_at)
    SELECT id, attempts, now() FROM claimed
)
SELECT * FROM claimed ORDER BY deadline, priority DESC, id;

-- name: claim_due_jobs_fair
-- As claim_due_jobs, with at most $8 running jobs per tenant. A skip scan visits each tenant
-- with pending jobs once and takes at most its free share, so one tenant's backlog is never
-- walked to find the others' jobs.
WITH RECURSIVE leader AS (
    SELECT 1 FROM scheduler_leader
    WHERE name = $5 AND holder = $6 AND epoch = $7 AND expires_at > now()
    FOR SHARE
), tenants AS (
    (SELECT j.tenant FROM jobs j WHERE j.use_case = $1 AND j.status = 'pending'
     ORDER BY j.tenant LIMIT 1)
    UNION ALL
    SELECT (SELECT j.tenant FROM jobs j
            WHERE j.use_case = $1 AND j.status = 'pending' AND j.tenant > t.tenant
            ORDER BY j.tenant LIMIT 1)
    FROM tenants t WHERE t.tenant IS NOT NULL
), running AS (
    SELECT r.tenant, count(*) AS n FROM jobs r
    WHERE r.use_case = $1 AND r.status = 'running' GROUP BY r.tenant
), candidates AS (
    SELECT c.id, c.deadline, c.priority FROM tenants t
    CROSS JOIN LATERAL (
        SELECT j.id, j.deadline, j.priority FROM jobs j
        WHERE j.use_case = $1 AND j.tenant = t.tenant AND j.status = 'pending'
          AND j.run_at <= now()
        ORDER BY j.deadline, j.priority DESC, j.id
        LIMIT greatest(0, $8 - coalesce((SELECT n FROM running WHERE running.tenant = t.tenant), 0))
    ) c
    WHERE t.tenant IS NOT NULL AND EXISTS (SELECT 1 FROM leader)
    ORDER BY c.deadline, c.priority DESC, c.id
    LIMIT least($3, greatest(0, $2 - coalesce((SELECT sum(n) FROM running), 0)))
), picked AS (
    SELECT j.id FROM jobs j
    WHERE j.id = ANY (ARRAY(SELECT id FROM candidates)) AND j.status = 'pending'
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE jobs j SET
        status = 'running',
        attempts = j.attempts + 1,
        lease_token = gen_random_uuid(),
        lease_expires_at = now() + $4 * interval '1 second',
        dispatched_at = now(),
        deadline_missed = j.deadline_missed OR j.deadline < now(),
        updated_at = now()
    -- by primary key: a join here lets the planner hash the whole table
    WHERE j.id = ANY (ARRAY(SELECT id FROM picked))
    RETURNING j.id, j.tenant, j.use_case, j.job_type, j.payload, j.attempts, j.max_attempts,
              j.lease_token, j.lease_expires_at, j.deadline, j.run_at, j.created_at,
              j.trace_context, j.priority, j.deadline < now() AS missed
), attempts AS (
    INSERT INTO job_attempts (job_id, attempt, dispatched_at)
    SELECT id, attempts, now() FROM claimed
)
SELECT * FROM claimed ORDER BY deadline, priority DESC, id;

-- name: release_leases
-- Give claims back (publish failed, or a worker stopped before finishing): pending again, the
-- attempt not counted. Fenced by the lease; a job cancelled meanwhile ends cancelled.
WITH input AS (
    SELECT * FROM unnest($1::uuid[], $2::integer[], $3::uuid[]) AS i(id, attempt, lease_token)
), released AS (
    UPDATE jobs j SET
        status = CASE WHEN j.cancel_requested THEN 'cancelled'::job_status
                      ELSE 'pending'::job_status END,
        attempts = j.attempts - 1,
        lease_token = NULL,
        lease_expires_at = NULL,
        finished_at = CASE WHEN j.cancel_requested THEN now() END,
        updated_at = now()
    FROM input i
    WHERE j.id = i.id AND j.attempts = i.attempt AND j.lease_token = i.lease_token
      AND j.status = 'running'
    RETURNING j.id, i.attempt
), forget AS (
    DELETE FROM job_attempts a USING released r WHERE a.job_id = r.id AND a.attempt = r.attempt
)
SELECT id FROM released;

-- name: complete_attempts
-- Record successes, fenced: the job must be running this attempt under this lease token.
WITH input AS (
    SELECT * FROM unnest($1::uuid[], $2::integer[], $3::uuid[], $4::jsonb[], $5::text[],
                         $6::timestamptz[])
        AS i(id, attempt, lease_token, result, worker_id, started_at)
), done AS (
    UPDATE jobs j SET
        status = CASE WHEN j.cancel_requested THEN 'cancelled'::job_status
                      ELSE 'succeeded'::job_status END,
        result = i.result,
        lease_token = NULL,
        lease_expires_at = NULL,
        finished_at = now(),
        updated_at = now()
    FROM input i
    WHERE j.id = i.id AND j.attempts = i.attempt AND j.lease_token = i.lease_token
      AND j.status = 'running'
    RETURNING j.id, j.status, j.attempts
), recorded AS (
    UPDATE job_attempts a SET
        outcome = CASE WHEN d.status = 'cancelled' THEN 'cancelled' ELSE 'succeeded' END,
        worker_id = coalesce(i.worker_id, a.worker_id),
        started_at = coalesce(i.started_at, a.started_at),
        finished_at = now()
    FROM done d JOIN input i ON i.id = d.id
    WHERE a.job_id = d.id AND a.attempt = d.attempts
)
SELECT id, status FROM done;

-- name: fail_attempts
-- Record failures, fenced like complete_attempts; $10 also demands an expired lease (the
-- reaper: a completion that landed after it read the job wins). Each job goes to the status
-- the service decided: pending at a later run_at (retry) or dead.
WITH input AS (
    SELECT * FROM unnest($1::uuid[], $2::integer[], $3::uuid[], $4::job_status[],
                         $5::timestamptz[], $6::text[], $7::text[], $8::text[], $9::text[],
                         $11::text[], $12::timestamptz[])
        AS i(id, attempt, lease_token, next_status, run_at, error_type, error_message,
             traceback, worker_id, outcome, started_at)
), done AS (
    UPDATE jobs j SET
        status = CASE WHEN j.cancel_requested THEN 'cancelled'::job_status
                      ELSE i.next_status END,
        run_at = CASE WHEN i.next_status = 'pending' THEN i.run_at ELSE j.run_at END,
        last_error = i.error_type || ': ' || i.error_message,
        lease_token = NULL,
        lease_expires_at = NULL,
        finished_at = CASE WHEN j.cancel_requested OR i.next_status <> 'pending' THEN now() END,
        updated_at = now()
    FROM input i
    WHERE j.id = i.id AND j.attempts = i.attempt AND j.lease_token = i.lease_token
      AND j.status = 'running' AND (NOT $10 OR j.lease_expires_at < now())
    RETURNING j.id, j.status, j.attempts
), recorded AS (
    UPDATE job_attempts a SET
        outcome = i.outcome,
        worker_id = coalesce(i.worker_id, a.worker_id),
        started_at = coalesce(i.started_at, a.started_at),
        finished_at = now(),
        error_type = i.error_type,
        error_message = i.error_message,
        traceback = i.traceback
    FROM done d JOIN input i ON i.id = d.id
    WHERE a.job_id = d.id AND a.attempt = d.attempts
)
SELECT id, status FROM done;

-- name: find_expired_leases
SELECT id, attempts, lease_token, max_attempts, backoff
FROM jobs
WHERE status = 'running' AND lease_expires_at < now()
ORDER BY lease_expires_at
LIMIT $1;

-- name: get_leases
SELECT id, attempts, lease_token, max_attempts, backoff
FROM jobs WHERE id = ANY ($1::uuid[]) AND status = 'running';

-- name: extend_leases
-- Heartbeats: push a lease's expiry forward, fenced; answer per item held / lost / cancelled.
WITH input AS (
    SELECT * FROM unnest($1::uuid[], $2::integer[], $3::uuid[], $4::float8[])
        AS i(id, attempt, lease_token, extend_seconds)
), extended AS (
    UPDATE jobs j SET
        lease_expires_at = greatest(j.lease_expires_at,
                                    now() + i.extend_seconds * interval '1 second'),
        updated_at = now()
    FROM input i
    WHERE j.id = i.id AND j.attempts = i.attempt AND j.lease_token = i.lease_token
      AND j.status = 'running'
    RETURNING j.id, j.cancel_requested, j.lease_expires_at
)
SELECT i.id, e.cancel_requested, e.lease_expires_at
FROM input i LEFT JOIN extended e ON e.id = i.id;

-- name: mark_attempts_started
UPDATE job_attempts a SET started_at = coalesce(a.started_at, now()), worker_id = $3
FROM unnest($1::uuid[], $2::integer[]) AS i(id, attempt)
WHERE a.job_id = i.id AND a.attempt = i.attempt;

-- name: get_payload
SELECT payload FROM jobs WHERE id = $1 AND status = 'running';

-- name: acquire_leadership
-- Take or renew the leader lease. Renewal keeps the epoch; a takeover (only once the lease
-- expired) bumps it, which fences the old leader's claims.
INSERT INTO scheduler_leader AS l (name, holder, epoch, expires_at)
VALUES ($1, $2, 1, now() + $3 * interval '1 second')
ON CONFLICT (name) DO UPDATE SET
    holder = EXCLUDED.holder,
    epoch = l.epoch + CASE WHEN l.holder = EXCLUDED.holder THEN 0 ELSE 1 END,
    expires_at = EXCLUDED.expires_at
WHERE l.holder = EXCLUDED.holder OR l.expires_at < now()
RETURNING epoch;

-- name: resign_leadership
UPDATE scheduler_leader SET expires_at = now() - interval '1 second'
WHERE name = $1 AND holder = $2;

-- name: get_leader
SELECT holder, epoch, expires_at, expires_at > now() AS live FROM scheduler_leader WHERE name = $1;

-- name: prune_finished_jobs
-- Bounded batches: at most $3 rows a statement, rows locked by others skipped.
WITH doomed AS (
    SELECT id FROM jobs
    WHERE use_case = $1 AND status IN ('succeeded', 'dead', 'cancelled')
      AND finished_at < now() - $2 * interval '1 second'
    ORDER BY finished_at
    LIMIT $3
    FOR UPDATE SKIP LOCKED
)
DELETE FROM jobs j USING doomed d WHERE j.id = d.id;

-- name: prune_idempotency_keys
DELETE FROM idempotency_keys
WHERE ctid = ANY (ARRAY(
    SELECT ctid FROM idempotency_keys WHERE created_at < now() - $1 * interval '1 second'
    LIMIT $2));

-- name: notify
SELECT pg_notify($1, $2);

-- name: count_running
SELECT use_case, count(*) AS n FROM jobs WHERE status = 'running' GROUP BY use_case;
