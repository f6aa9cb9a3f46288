-- Every SQL statement jobs-server runs. Each block starts with `-- name: <method>` and is
-- called by the PostgresJobStore method of the same name.
--
-- No statement reads the database's clock: each takes the time as one timestamptz parameter,
-- the store's clock (jobs_server.clock) read once per call, so every use inside a statement or
-- transaction sees the same instant, as now() did, and a test can move it.

-- name: enqueue_jobs
-- The job as plain columns, not the `jobs` composite: asyncpg decodes those faster, and skips
-- backoff and trace_context, which Job does not carry. JSON travels as text both ways, encoded
-- and decoded in PostgresJobStore.enqueue_jobs more cheaply than by the jsonb codec.
-- The feasibility summary's deltas for the pending jobs inserted are written here rather than
-- by a trigger (migration 0022: a third of the cost on a one-job enqueue).
-- Under an idempotency key ($19, $20 the request's hash; both null: none) the same statement
-- stores the key with the outcomes, so a keyed enqueue is one round trip: a key already stored
-- stores nothing and answers no rows (PostgresJobStore reads the replay), and a request racing
-- another with the same key waits on the key's index entry, then fails on it as a whole (its
-- jobs with it) and is answered from the first's outcomes.
-- $21 (announce): the statement NOTIFYs the jobs it created itself, as the claims do, instead
-- of a NOTIFY statement after the commit (EnqueueStore.enqueue_jobs says when).
WITH seen AS (
    SELECT 1 FROM idempotency_keys WHERE $19::text IS NOT NULL AND tenant = $1 AND key = $19
), e AS (
    SELECT * FROM jobs_enqueue($1, $2, $3, $4, $5, $6::text[]::jsonb[], $7, $8, $9, $10,
                               $11::text[]::jsonb[], $12, $13::text[]::jsonb[],
                               $14::text[]::jsonb[], $15::timestamptz, $16::text[], $17::text[],
                               $18::timestamptz[])
    WHERE NOT EXISTS (SELECT 1 FROM seen)
), deltas AS (
    INSERT INTO feasibility_pending_deltas (use_case, priority, bucket, n)
    SELECT i.use_case, i.priority, jobs_deadline_second(i.deadline), count(*)
    FROM e JOIN unnest($4::text[], $7::integer[], $9::timestamptz[]) WITH ORDINALITY
        AS i (use_case, priority, deadline, ord) ON i.ord = e.ord
    WHERE current_setting('jobs.feasibility', true) IS DISTINCT FROM 'off'
      AND (e.outcome = 'created' AND (e.job).status = 'pending' OR e.outcome = 'quota_exceeded')
    GROUP BY 1, 2, 3
), kept AS (
    INSERT INTO idempotency_keys (tenant, key, request_hash, created_at, response)
    SELECT $1, $19, $20, $15::timestamptz,
           (SELECT coalesce(jsonb_agg(jsonb_build_array((e.job).id::text, e.outcome)
                                      ORDER BY e.ord), '[]') FROM e)
    WHERE $19::text IS NOT NULL AND NOT EXISTS (SELECT 1 FROM seen)
), announced AS (
    -- one row always (an aggregate): the scheduler's wake-up on WAKEUP_CHANNEL as
    -- jobs_server.wakeups writes it, and the ids on the events channel (jobs_notify_ids)
    SELECT CASE WHEN count(*) > 0 THEN pg_notify('jobs_wakeup', json_build_object(
               'u', array_agg(DISTINCT (e.job).use_case),
               't', extract(epoch FROM min((e.job).run_at)))::text) END AS woke,
           CASE WHEN count(*) > 0 THEN jobs_notify_ids(array_agg((e.job).id)) END AS told,
           $21::boolean AS announced
    FROM e WHERE $21::boolean AND e.outcome = 'created'
)
SELECT ord, outcome, (job).id, (job).tenant, (job).use_case, (job).job_type, (job).payload::text,
       (job).status, (job).priority, (job).run_at, (job).deadline, (job).attempts,
       (job).max_attempts, (job).dedup_key, (job).result, (job).last_error,
       (job).cancel_requested, (job).deadline_missed, (job).created_at, (job).updated_at,
       (job).finished_at, (job).unique_rule, (job).concurrency_key, (job).rate_key,
       (job).expires_at, announced.announced
FROM e, announced;

-- name: get_job
SELECT j FROM jobs j WHERE j.id = $1 AND ($2::text IS NULL OR j.tenant = $2);

-- name: get_job_attempts
SELECT attempt, outcome, worker_id, dispatched_at, started_at, finished_at,
       error_type, error_message, traceback, deadline
FROM job_attempts WHERE job_id = $1 ORDER BY attempt;

-- name: list_jobs
-- Newest first, keyset on id. The filter marker becomes the AND of the filters given
-- (job_filter in postgres.py, parameters from $2): each combination is its own statement,
-- planned for the index that serves it, where a catch-all `$n IS NULL OR ...` lets a cached
-- generic plan ignore them all.
SELECT j FROM jobs j
WHERE /*filter*/
ORDER BY j.id DESC
LIMIT $1;

-- name: cancel_job
-- A pending (or waiting) job is cancelled at once; a running one is marked and ends cancelled
-- when its worker reports or its lease expires.
UPDATE jobs j SET
    status = CASE WHEN j.status IN ('pending', 'waiting') THEN 'cancelled'::job_status
                  ELSE j.status END,
    cancel_requested = j.cancel_requested OR j.status = 'running',
    finished_at = CASE WHEN j.status IN ('pending', 'waiting') THEN $3::timestamptz
                       ELSE j.finished_at END,
    updated_at = $3::timestamptz
WHERE j.id = $1 AND ($2::text IS NULL OR j.tenant = $2)
  AND j.status IN ('pending', 'running', 'waiting')
RETURNING j;

-- name: get_idempotency_key
SELECT request_hash, response FROM idempotency_keys WHERE tenant = $1 AND key = $2;

-- name: ping
SELECT 1;

-- name: read_clock
-- The one statement that reads the database's clock: DatabaseClock's reading.
SELECT clock_timestamp();

-- name: claim_idempotency_key
INSERT INTO idempotency_keys (tenant, key, request_hash, created_at)
VALUES ($1, $2, $3, $4::timestamptz)
ON CONFLICT (tenant, key) DO NOTHING
RETURNING true;

-- name: save_idempotency_result
UPDATE idempotency_keys SET response = $3 WHERE tenant = $1 AND key = $2;

-- name: get_jobs
SELECT j FROM jobs j WHERE j.id = ANY ($1::uuid[]);

-- name: claim_lease
-- Not a statement: the `claimed` step of the three claim statements, included by each where
-- its text names this block (load_queries): lease the rows of `picked` to the leader's
-- dispatch, $4 the lease seconds, $8 now. By primary key: a join here lets the planner hash
-- the whole table.
UPDATE jobs j SET
        status = 'running',
        attempts = j.attempts + 1,
        lease_token = gen_random_uuid(),
        lease_expires_at = $8::timestamptz + $4 * interval '1 second',
        dispatched_at = $8::timestamptz,
        deadline_missed = j.deadline_missed OR j.deadline < $8::timestamptz,
        updated_at = $8::timestamptz
    WHERE j.id = ANY (ARRAY(SELECT id FROM picked))
    RETURNING j.id, j.tenant, j.use_case, j.job_type, j.payload, j.attempts, j.max_attempts,
              j.lease_token, j.lease_expires_at, j.deadline, j.run_at, j.created_at,
              j.trace_context, j.priority, j.deadline < $8::timestamptz AS missed

-- name: paused_tenants
-- Not a statement: the tenants paused in use case $1 (jobs_server.pauses: a tenant's pause
-- everywhere or in $1), read by each claim statement itself, so a pass needs no read of its
-- own before its claims and a pause takes effect at the first claim after its commit.
SELECT p.tenant FROM pauses p WHERE p.paused AND p.use_case IN ('', $1)

-- name: use_case_paused
-- Not a statement: whether use case $1 is paused as a whole (see paused_tenants).
EXISTS (SELECT 1 FROM pauses p WHERE p.paused AND p.use_case = $1 AND p.tenant = '')

-- name: announce_claimed
-- Not a statement: the `announced` step of the three claim statements. The claimed jobs' ids
-- go to the event streams by a NOTIFY of the claim's own transaction (jobs_notify_ids), not by
-- a statement of their own after it: one leader claims at a time, so the commit-time lock a
-- NOTIFY takes is never contended by another claim, and a pass costs one transaction.
SELECT jobs_notify_ids(ARRAY(SELECT id FROM claimed))

-- name: get_job_heads
-- The event streams' read after a NOTIFY (jobs_server.streams): each job's state, no payload.
SELECT id, tenant, use_case, job_type, status, attempts, max_attempts, run_at, deadline,
       deadline_missed, cancel_requested, updated_at, finished_at
FROM jobs WHERE id = ANY ($1::uuid[]);

-- name: claim_due_jobs
-- Lease up to the use case's free slots of its due pending jobs, earliest deadline first, then
-- priority, then age, for the current leader only (the FOR SHARE on the leader row makes a
-- takeover wait for this statement, and a deposed leader claim nothing).
-- $1 use case, $2 capacity, $3 batch limit, $4 lease seconds, $5 leader name, $6 holder, $7 epoch,
-- $8 now; paused tenants and use cases are read from `pauses` (paused_tenants)
WITH leader AS (
    SELECT 1 FROM scheduler_leader
    WHERE name = $5 AND holder = $6 AND epoch = $7 AND expires_at > $8::timestamptz
    FOR SHARE
), picked AS (
    SELECT j.id FROM jobs j
    WHERE j.use_case = $1 AND j.status = 'pending' AND j.run_at <= $8::timestamptz
      AND EXISTS (SELECT 1 FROM leader)
      AND j.tenant NOT IN (/*include paused_tenants*/)
      AND NOT /*include use_case_paused*/
      AND (j.expires_at IS NULL OR j.expires_at >= $8::timestamptz)  -- not due to expire
    ORDER BY j.priority DESC, j.deadline, j.id
    LIMIT least($3, greatest(0, $2 - (
        SELECT count(*) FROM jobs r WHERE r.use_case = $1 AND r.status = 'running')))
    FOR UPDATE SKIP LOCKED
), claimed AS (
    /*include claim_lease*/
), attempts AS (
    INSERT INTO job_attempts (job_id, attempt, dispatched_at)
    SELECT id, attempts, $8::timestamptz FROM claimed
), announced AS (
    /*include announce_claimed*/
)
SELECT claimed.* FROM claimed, announced ORDER BY priority DESC, deadline, id;

-- name: claim_due_jobs_fair
-- As claim_due_jobs, with at most $9 running jobs per tenant. A skip scan visits each tenant
-- with pending jobs once and takes at most its free share, so one tenant's backlog is never
-- walked to find the others' jobs. $8 now; pauses as there.
WITH RECURSIVE leader AS (
    SELECT 1 FROM scheduler_leader
    WHERE name = $5 AND holder = $6 AND epoch = $7 AND expires_at > $8::timestamptz
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
          AND j.run_at <= $8::timestamptz AND t.tenant NOT IN (/*include paused_tenants*/)
          AND (j.expires_at IS NULL OR j.expires_at >= $8::timestamptz)  -- not due to expire
        ORDER BY j.priority DESC, j.deadline, j.id
        LIMIT greatest(0, $9 - coalesce((SELECT n FROM running WHERE running.tenant = t.tenant), 0))
    ) c
    WHERE t.tenant IS NOT NULL AND EXISTS (SELECT 1 FROM leader)
      AND NOT /*include use_case_paused*/
    ORDER BY c.priority DESC, c.deadline, c.id
    LIMIT least($3, greatest(0, $2 - (
        SELECT count(*) FROM jobs r WHERE r.use_case = $1 AND r.status = 'running')))
), picked AS (
    SELECT j.id FROM jobs j
    WHERE j.id = ANY (ARRAY(SELECT id FROM candidates)) AND j.status = 'pending'
    FOR UPDATE SKIP LOCKED
), claimed AS (
    /*include claim_lease*/
), attempts AS (
    INSERT INTO job_attempts (job_id, attempt, dispatched_at)
    SELECT id, attempts, $8::timestamptz FROM claimed
), announced AS (
    /*include announce_claimed*/
)
SELECT claimed.* FROM claimed, announced ORDER BY priority DESC, deadline, id;

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
        finished_at = CASE WHEN j.cancel_requested THEN $4::timestamptz END,
        updated_at = $4::timestamptz
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
-- Results come as JSON text: a jsonb[] parameter would read a result that is an array as a
-- dimension of the parameter.
WITH input AS (
    SELECT * FROM unnest($1::uuid[], $2::integer[], $3::uuid[], $4::text[], $5::text[],
                         $6::timestamptz[])
        AS i(id, attempt, lease_token, result, worker_id, started_at)
), done AS (
    UPDATE jobs j SET
        status = CASE WHEN j.cancel_requested THEN 'cancelled'::job_status
                      ELSE 'succeeded'::job_status END,
        result = i.result::jsonb,
        lease_token = NULL,
        lease_expires_at = NULL,
        finished_at = $7::timestamptz,
        updated_at = $7::timestamptz
    FROM input i
    WHERE j.id = i.id AND j.attempts = i.attempt AND j.lease_token = i.lease_token
      AND j.status = 'running'
    RETURNING j.id, j.status, j.attempts
), recorded AS (
    UPDATE job_attempts a SET
        outcome = CASE WHEN d.status = 'cancelled' THEN 'cancelled' ELSE 'succeeded' END,
        worker_id = coalesce(i.worker_id, a.worker_id),
        started_at = coalesce(i.started_at, a.started_at),
        finished_at = $7::timestamptz
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
        finished_at = CASE WHEN j.cancel_requested OR i.next_status <> 'pending'
                           THEN $13::timestamptz END,
        updated_at = $13::timestamptz
    FROM input i
    WHERE j.id = i.id AND j.attempts = i.attempt AND j.lease_token = i.lease_token
      AND j.status = 'running' AND (NOT $10 OR j.lease_expires_at < $13::timestamptz)
    RETURNING j.id, j.status, j.attempts
), recorded AS (
    UPDATE job_attempts a SET
        outcome = i.outcome,
        worker_id = coalesce(i.worker_id, a.worker_id),
        started_at = coalesce(i.started_at, a.started_at),
        finished_at = $13::timestamptz,
        error_type = i.error_type,
        error_message = i.error_message,
        traceback = i.traceback
    FROM done d JOIN input i ON i.id = d.id
    WHERE a.job_id = d.id AND a.attempt = d.attempts
)
SELECT id, status FROM done;

-- name: find_expired_leases
SELECT id, attempts, lease_token, max_attempts, backoff, tenant, use_case
FROM jobs
WHERE status = 'running' AND lease_expires_at < $2::timestamptz
ORDER BY lease_expires_at
LIMIT $1;

-- name: get_leases
SELECT id, attempts, lease_token, max_attempts, backoff, tenant, use_case
FROM jobs WHERE id = ANY ($1::uuid[]) AND status = 'running';

-- name: extend_leases
-- Heartbeats: push a lease's expiry forward, fenced; answer per item held / lost / cancelled.
WITH input AS (
    SELECT * FROM unnest($1::uuid[], $2::integer[], $3::uuid[], $4::float8[])
        AS i(id, attempt, lease_token, extend_seconds)
), extended AS (
    UPDATE jobs j SET
        lease_expires_at = greatest(j.lease_expires_at,
                                    $5::timestamptz + i.extend_seconds * interval '1 second'),
        updated_at = $5::timestamptz
    FROM input i
    WHERE j.id = i.id AND j.attempts = i.attempt AND j.lease_token = i.lease_token
      AND j.status = 'running'
    RETURNING j.id, j.cancel_requested, j.lease_expires_at
)
SELECT i.id, e.cancel_requested, e.lease_expires_at
FROM input i LEFT JOIN extended e ON e.id = i.id;

-- name: mark_attempts_started
UPDATE job_attempts a SET started_at = coalesce(a.started_at, $4::timestamptz), worker_id = $3
FROM unnest($1::uuid[], $2::integer[]) AS i(id, attempt)
WHERE a.job_id = i.id AND a.attempt = i.attempt AND a.worker_id IS NULL;

-- name: get_payload
SELECT payload FROM jobs WHERE id = $1 AND status = 'running';

-- name: get_lease_tenant
-- A lease credential's tenant: only while that attempt holds the job's lease, unexpired, and
-- the job is running and not marked for cancellation.
SELECT tenant FROM jobs
WHERE id = $1 AND attempts = $2 AND lease_token = $3
  AND status = 'running' AND lease_expires_at > $4::timestamptz AND NOT cancel_requested;

-- name: acquire_leadership
-- Take or renew the leader lease. Renewal keeps the epoch; a takeover (only once the lease
-- expired) bumps it, which fences the old leader's claims.
INSERT INTO scheduler_leader AS l (name, holder, epoch, expires_at, leader_since)
VALUES ($1, $2, 1, $4::timestamptz + $3 * interval '1 second', $4::timestamptz)
ON CONFLICT (name) DO UPDATE SET
    holder = EXCLUDED.holder,
    epoch = l.epoch + CASE WHEN l.holder = EXCLUDED.holder THEN 0 ELSE 1 END,
    expires_at = EXCLUDED.expires_at,
    leader_since = CASE WHEN l.holder = EXCLUDED.holder
                        THEN coalesce(l.leader_since, EXCLUDED.leader_since)
                        ELSE EXCLUDED.leader_since END
WHERE l.holder = EXCLUDED.holder OR l.expires_at < $4::timestamptz
RETURNING epoch;

-- name: resign_leadership
UPDATE scheduler_leader SET expires_at = $3::timestamptz - interval '1 second'
WHERE name = $1 AND holder = $2;

-- name: get_leader
SELECT holder, epoch, expires_at, expires_at > $2::timestamptz AS live
FROM scheduler_leader WHERE name = $1;

-- name: prune_finished_jobs
-- Bounded batches: at most $3 rows a statement, rows locked by others skipped.
WITH doomed AS (
    SELECT id FROM jobs
    WHERE use_case = $1 AND status IN ('succeeded', 'dead', 'cancelled', 'expired')
      AND finished_at < $4::timestamptz - $2 * interval '1 second'
    ORDER BY finished_at
    LIMIT $3
    FOR UPDATE SKIP LOCKED
)
DELETE FROM jobs j USING doomed d WHERE j.id = d.id;

-- name: prune_idempotency_keys
DELETE FROM idempotency_keys
WHERE ctid = ANY (ARRAY(
    SELECT ctid FROM idempotency_keys WHERE created_at < $3::timestamptz - $1 * interval '1 second'
    LIMIT $2));

-- name: notify
SELECT pg_notify($1, $2);

-- name: notify_all
-- Several NOTIFYs in one autocommit statement (jobs_server.notify.Notifier), in order.
SELECT count(pg_notify(n.channel, n.payload))
FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS n (channel, payload, ord);

-- name: count_running
SELECT use_case, count(*) AS n FROM jobs WHERE status = 'running' GROUP BY use_case;

-- name: count_jobs
-- The confirmation of a bulk action: how many match, and the newest id (the action's bound).
-- The filter's parameters from $1.
SELECT (SELECT count(*) FROM jobs j WHERE /*filter*/) AS n,
       (SELECT j.id FROM jobs j WHERE /*filter*/ ORDER BY j.id DESC LIMIT 1) AS max_id;

-- name: cancel_jobs
-- One batch of a bulk cancel, as cancel_job does it: pending jobs end cancelled at once,
-- running ones are marked. Keyset from $2 down, at most $1 rows locked per statement; $3 now,
-- the filter's parameters from $4.
WITH picked AS (
    SELECT j.id FROM jobs j
    WHERE /*filter*/ AND j.status IN ('pending', 'running', 'waiting') AND NOT j.cancel_requested
      AND ($2::uuid IS NULL OR j.id < $2)
    ORDER BY j.id DESC
    LIMIT $1
    FOR UPDATE
), done AS (
    UPDATE jobs j SET
        status = CASE WHEN j.status IN ('pending', 'waiting') THEN 'cancelled'::job_status
                      ELSE j.status END,
        cancel_requested = j.cancel_requested OR j.status = 'running',
        finished_at = CASE WHEN j.status IN ('pending', 'waiting') THEN $3::timestamptz
                           ELSE j.finished_at END,
        updated_at = $3::timestamptz
    WHERE j.id = ANY (ARRAY(SELECT id FROM picked))
    RETURNING j.id, j.use_case
)
SELECT (SELECT count(*) FROM picked) AS picked, (SELECT count(*) FROM done) AS touched,
       (SELECT id FROM picked ORDER BY id LIMIT 1) AS last_id,
       (SELECT coalesce(array_agg(DISTINCT use_case), '{}') FROM done) AS use_cases,
       (SELECT coalesce(array_agg(id), '{}') FROM done) AS ids;

-- name: retry_jobs
-- One batch of retries: dead, cancelled or expired jobs become pending now, with a new deadline
-- (now + the use case's default tolerance, $3/$4, else $8) and at least one attempt left; a job
-- that expires keeps its grace (expires_at - deadline) past the new deadline. A job whose
-- dedup key an active job holds stays as it is (so does all but the newest of a batch's jobs
-- sharing a key), and so do jobs past their tenant's quota ($5/$6, else $7; null: none): the
-- usage rows are locked after the job rows, the order enqueue and the usage trigger use.
-- The attempts so far keep the deadline they ran under. Keyset from $2 down, at most $1 rows
-- per statement; $9 now, the filter's parameters from $10.
WITH picked AS (
    SELECT j.id, j.tenant, j.use_case, j.dedup_key FROM jobs j
    WHERE /*filter*/ AND j.status IN ('dead', 'cancelled', 'expired')
      AND ($2::uuid IS NULL OR j.id < $2)
    ORDER BY j.id DESC
    LIMIT $1
    FOR UPDATE
), usage AS (
    SELECT u.tenant, u.active FROM tenant_usage u
    WHERE u.tenant IN (SELECT tenant FROM picked)
    ORDER BY u.tenant
    FOR UPDATE
), eligible AS (
    SELECT e.id, e.tenant, row_number() OVER (PARTITION BY e.tenant ORDER BY e.id DESC) AS n
    FROM (
        SELECT DISTINCT ON (p.tenant, p.use_case, coalesce('k:' || p.dedup_key, 'i:' || p.id))
               p.id, p.tenant
        FROM picked p
        WHERE p.dedup_key IS NULL OR NOT EXISTS (
            SELECT 1 FROM jobs a
            WHERE a.tenant = p.tenant AND a.use_case = p.use_case AND a.dedup_key = p.dedup_key
              AND a.status IN ('pending', 'running'))
        ORDER BY p.tenant, p.use_case, coalesce('k:' || p.dedup_key, 'i:' || p.id), p.id DESC
    ) e
), granted AS (
    SELECT e.id FROM eligible e
    LEFT JOIN usage u ON u.tenant = e.tenant
    LEFT JOIN unnest($5::text[], $6::bigint[]) AS q(tenant, quota) ON q.tenant = e.tenant
    WHERE coalesce(q.quota, $7::bigint) IS NULL
       OR e.n <= coalesce(q.quota, $7::bigint) - coalesce(u.active, 0)
), stamped AS (
    UPDATE job_attempts a SET deadline = j.deadline
    FROM jobs j
    WHERE j.id = a.job_id AND a.job_id = ANY (ARRAY(SELECT id FROM granted)) AND a.deadline IS NULL
), done AS (
    UPDATE jobs j SET
        status = 'pending',
        run_at = $9::timestamptz,
        deadline = $9::timestamptz + coalesce(
            (SELECT t.seconds FROM unnest($3::text[], $4::float8[]) AS t(use_case, seconds)
             WHERE t.use_case = j.use_case), $8::float8) * interval '1 second',
        expires_at = $9::timestamptz + coalesce(
            (SELECT t.seconds FROM unnest($3::text[], $4::float8[]) AS t(use_case, seconds)
             WHERE t.use_case = j.use_case), $8::float8) * interval '1 second'
            + (j.expires_at - j.deadline),
        max_attempts = greatest(j.max_attempts, j.attempts + 1),
        deadline_missed = false,
        cancel_requested = false,
        result = NULL,
        lease_token = NULL,
        lease_expires_at = NULL,
        finished_at = NULL,
        updated_at = $9::timestamptz
    WHERE j.id = ANY (ARRAY(SELECT id FROM granted))
    RETURNING j.id, j.use_case
)
SELECT (SELECT count(*) FROM picked) AS picked, (SELECT count(*) FROM done) AS touched,
       (SELECT id FROM picked ORDER BY id LIMIT 1) AS last_id,
       (SELECT coalesce(array_agg(DISTINCT use_case), '{}') FROM done) AS use_cases,
       (SELECT coalesce(array_agg(id), '{}') FROM done) AS ids;

-- name: record_scheduler_pass
INSERT INTO scheduler_status AS s
    (name, holder, epoch, last_pass_at, last_pass_seconds, passes, dispatched, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8::timestamptz)
ON CONFLICT (name) DO UPDATE SET
    holder = EXCLUDED.holder,
    epoch = EXCLUDED.epoch,
    last_pass_at = EXCLUDED.last_pass_at,
    last_pass_seconds = EXCLUDED.last_pass_seconds,
    passes = EXCLUDED.passes,
    dispatched = EXCLUDED.dispatched,
    updated_at = $8::timestamptz;

-- name: refresh_job_counts
-- Replace the active-jobs snapshot with one GROUP BY over pending and running rows (the only
-- statement here whose cost grows with the backlog; the scheduler runs it in the background).
-- One branch per status, so that each reads its partial index, not the whole table.
WITH active AS (
    SELECT tenant, use_case, status, run_at, deadline FROM jobs WHERE status = 'pending'
    UNION ALL
    SELECT tenant, use_case, status, run_at, deadline FROM jobs WHERE status = 'running'
), fresh AS (
    SELECT tenant, use_case,
           count(*) FILTER (WHERE status = 'pending') AS pending,
           count(*) FILTER (WHERE status = 'pending' AND run_at <= $2::timestamptz) AS due,
           count(*) FILTER (WHERE status = 'pending' AND deadline < $2::timestamptz) AS overdue,
           count(*) FILTER (WHERE status = 'running') AS running,
           min(run_at) FILTER (WHERE status = 'pending' AND run_at <= $2::timestamptz)
               AS oldest_due,
           min(deadline) FILTER (WHERE status = 'pending' AND run_at <= $2::timestamptz) AS earliest
    FROM active
    GROUP BY tenant, use_case
), gone AS (
    DELETE FROM job_counts c
    WHERE NOT EXISTS (SELECT 1 FROM fresh f WHERE f.tenant = c.tenant AND f.use_case = c.use_case)
), stamped AS (
    UPDATE scheduler_status SET counts_at = $2::timestamptz WHERE name = $1
)
INSERT INTO job_counts AS c (tenant, use_case, pending, due, overdue, running, oldest_due_run_at,
                             earliest_due_deadline)
SELECT tenant, use_case, pending, due, overdue, running, oldest_due, earliest FROM fresh
ON CONFLICT (tenant, use_case) DO UPDATE SET
    pending = EXCLUDED.pending,
    due = EXCLUDED.due,
    overdue = EXCLUDED.overdue,
    running = EXCLUDED.running,
    oldest_due_run_at = EXCLUDED.oldest_due_run_at,
    earliest_due_deadline = EXCLUDED.earliest_due_deadline;

-- name: add_dispatch_stats
INSERT INTO job_stats_minute AS m
    (minute, use_case, tenant, dispatched, missed, slack_sum, slack_min, slack_max)
SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::integer[], $5::integer[],
                     $6::float8[], $7::float8[], $8::float8[])
ON CONFLICT (minute, use_case, tenant) DO UPDATE SET
    dispatched = m.dispatched + EXCLUDED.dispatched,
    missed = m.missed + EXCLUDED.missed,
    slack_sum = m.slack_sum + EXCLUDED.slack_sum,
    slack_min = least(m.slack_min, EXCLUDED.slack_min),
    slack_max = greatest(m.slack_max, EXCLUDED.slack_max);

-- name: roll_up_finished
-- Add the jobs that finished since the watermark to job_stats_minute, through jobs_finished_idx,
-- and move the watermark. The window ends $3 seconds ago (finished_at is its statement's time:
-- a report still committing must not be passed by) and spans at most $4 seconds; the first
-- window starts an hour back. The status row's lock makes concurrent callers take turns.
-- $1 scheduler name, $2 use cases, $5 now.
WITH state AS (
    SELECT finished_through FROM scheduler_status WHERE name = $1 FOR UPDATE
), bounds AS (
    SELECT lo,
           least($5::timestamptz - $3 * interval '1 second', lo + $4 * interval '1 second') AS hi
    FROM (SELECT coalesce((SELECT finished_through FROM state), $5::timestamptz - interval '1 hour')
          AS lo) s
), counted AS (
    INSERT INTO job_stats_minute AS m
        (minute, use_case, tenant, succeeded, dead, cancelled, expired)
    SELECT date_trunc('minute', j.finished_at), j.use_case, j.tenant,
           count(*) FILTER (WHERE j.status = 'succeeded'),
           count(*) FILTER (WHERE j.status = 'dead'),
           count(*) FILTER (WHERE j.status = 'cancelled'),
           count(*) FILTER (WHERE j.status = 'expired')
    FROM jobs j, bounds b
    WHERE j.use_case = ANY ($2::text[])
      AND j.status IN ('succeeded', 'dead', 'cancelled', 'expired')
      AND j.finished_at >= b.lo AND j.finished_at < b.hi
    GROUP BY 1, 2, 3
    ON CONFLICT (minute, use_case, tenant) DO UPDATE SET
        succeeded = m.succeeded + EXCLUDED.succeeded,
        dead = m.dead + EXCLUDED.dead,
        cancelled = m.cancelled + EXCLUDED.cancelled,
        expired = m.expired + EXCLUDED.expired
    RETURNING m.succeeded
), moved AS (
    UPDATE scheduler_status s SET finished_through = b.hi FROM bounds b
    WHERE s.name = $1 AND b.hi > b.lo
)
SELECT count(*) FROM counted;

-- name: prune_job_stats
DELETE FROM job_stats_minute WHERE minute < $2::timestamptz - $1 * interval '1 second';

-- name: get_job_counts
SELECT tenant, use_case, pending, due, overdue, running, oldest_due_run_at, earliest_due_deadline
FROM job_counts WHERE ($1::text IS NULL OR tenant = $1)
ORDER BY use_case, tenant;

-- name: get_minute_stats
SELECT minute, use_case, sum(dispatched) AS dispatched, sum(missed) AS missed,
       sum(slack_sum) AS slack_sum, min(slack_min) AS slack_min, max(slack_max) AS slack_max,
       sum(succeeded) AS succeeded, sum(dead) AS dead, sum(cancelled) AS cancelled,
       sum(expired) AS expired
FROM job_stats_minute
WHERE minute >= $1 AND ($2::text IS NULL OR tenant = $2)
GROUP BY minute, use_case
ORDER BY minute, use_case;

-- name: get_scheduler_status
SELECT $2::timestamptz AS now, l.holder, l.epoch, l.expires_at, l.leader_since,
       coalesce(l.expires_at > $2::timestamptz, false) AS live,
       s.last_pass_at, s.last_pass_seconds, coalesce(s.passes, 0) AS passes,
       coalesce(s.dispatched, 0) AS dispatched, s.counts_at
FROM (SELECT $1::text AS name) n
LEFT JOIN scheduler_leader l ON l.name = n.name
LEFT JOIN scheduler_status s ON s.name = n.name;

-- name: ensure_scheduler_status
INSERT INTO scheduler_status (name, updated_at) VALUES ($1, $2::timestamptz)
ON CONFLICT (name) DO NOTHING;

-- name: count_active_jobs
-- Queue depth for /metrics: pending, due and running jobs per use case, per tenant for the
-- tenants in $1 (the rest together under ''), and the run_at of the oldest due job. One arm
-- per status, each read through its partial index (jobs_claim_idx, jobs_running_idx): the
-- cost grows with active jobs, never with finished ones. The scheduler leader runs it every
-- JOBS_METRICS_REFRESH_SECONDS, never per scrape.
WITH active AS (
    SELECT j.use_case, j.tenant, 1 AS pending, (j.run_at <= $2::timestamptz)::int AS due,
           0 AS running,
           CASE WHEN j.run_at <= $2::timestamptz THEN j.run_at END AS due_run_at
    FROM jobs j WHERE j.status = 'pending'
    UNION ALL
    SELECT j.use_case, j.tenant, 0, 0, 1, NULL FROM jobs j WHERE j.status = 'running'
)
SELECT use_case, CASE WHEN tenant = ANY ($1::text[]) THEN tenant ELSE '' END AS tenant,
       sum(pending) AS pending, sum(due) AS due, sum(running) AS running,
       min(due_run_at) AS oldest_due_run_at
FROM active
GROUP BY 1, 2;

-- name: create_dashboard_session
-- A login: the new session, and at most 100 expired ones deleted in the same round trip, so the
-- table stays small with no service of its own.
WITH pruned AS (
    DELETE FROM dashboard_sessions
    WHERE id_hash = ANY (ARRAY(
        SELECT id_hash FROM dashboard_sessions WHERE expires_at <= $6::timestamptz
        ORDER BY expires_at LIMIT 100))
)
INSERT INTO dashboard_sessions (id_hash, role, tenant, token_check, created_at, expires_at)
VALUES ($1, $2, $3, $4, $6::timestamptz, $6::timestamptz + $5 * interval '1 second');

-- name: get_dashboard_session
SELECT role, tenant, token_check, expires_at FROM dashboard_sessions
WHERE id_hash = $1 AND expires_at > $2::timestamptz;

-- name: delete_dashboard_session
DELETE FROM dashboard_sessions WHERE id_hash = $1;

-- -- pauses ------------------------------------------------------------------------------------
-- A scope is (use_case, tenant) with '' for "every": ('', t) pauses tenant t everywhere, (u, '')
-- use case u, (u, t) tenant t within u. A change writes the state row and one history row; a
-- pause of a paused scope (or a resume of a running one) changes nothing and returns the row as
-- it is, with changed false. $1 use case, $2 tenant, $3 principal, $4 reason, $5 now.

-- name: pause_queue
WITH changed AS (
    INSERT INTO pauses AS p (use_case, tenant, paused, changed_by, changed_at, reason)
    VALUES ($1, $2, true, $3, $5::timestamptz, $4)
    ON CONFLICT (use_case, tenant) DO UPDATE SET
        paused = true, changed_by = $3, changed_at = $5::timestamptz, reason = $4
    WHERE NOT p.paused
    RETURNING p.use_case, p.tenant, p.paused, p.changed_by, p.changed_at, p.reason
), logged AS (
    INSERT INTO pause_history (use_case, tenant, paused, changed_by, changed_at, reason)
    SELECT use_case, tenant, paused, changed_by, changed_at, reason FROM changed
)
SELECT use_case, tenant, paused, changed_by, changed_at, reason, true AS changed FROM changed
UNION ALL
SELECT use_case, tenant, paused, changed_by, changed_at, reason, false FROM pauses
WHERE use_case = $1 AND tenant = $2 AND NOT EXISTS (SELECT 1 FROM changed);

-- name: resume_queue
WITH changed AS (
    UPDATE pauses SET paused = false, changed_by = $3, changed_at = $5::timestamptz, reason = $4
    WHERE use_case = $1 AND tenant = $2 AND paused
    RETURNING use_case, tenant, paused, changed_by, changed_at, reason
), logged AS (
    INSERT INTO pause_history (use_case, tenant, paused, changed_by, changed_at, reason)
    SELECT use_case, tenant, paused, changed_by, changed_at, reason FROM changed
)
SELECT use_case, tenant, paused, changed_by, changed_at, reason, true AS changed FROM changed
UNION ALL
SELECT use_case, tenant, paused, changed_by, changed_at, reason, false FROM pauses
WHERE use_case = $1 AND tenant = $2 AND NOT EXISTS (SELECT 1 FROM changed);

-- name: list_pauses
-- The paused scopes (a handful of rows): the API, the dashboard and the metrics refresh; the
-- claims read them themselves (paused_tenants).
SELECT use_case, tenant, paused, changed_by, changed_at, reason FROM pauses
WHERE paused ORDER BY use_case, tenant;

-- name: list_pause_history
-- The latest changes first, at most $1.
SELECT use_case, tenant, paused, changed_by, changed_at, reason FROM pause_history
ORDER BY id DESC LIMIT $1;

-- Flow limits ---------------------------------------------------------------------------------

-- name: claim_due_jobs_keyed
-- As claim_due_jobs_fair ($9 the per-tenant cap, or null), with at most $10 running jobs per
-- concurrency key and at most $11 starts per rate key in any $12 seconds (each null: no limit);
-- pauses as claim_due_jobs.
-- The due jobs are walked in claim order (jobs_claim_idx), passing over those of a blocked
-- key or tenant: a concurrency key or tenant at its cap (from the running set, bounded by the
-- capacity) or a rate key whose interval is full (rate_buckets.blocked_until, kept by this
-- statement). The first batch and a half of the rest are cut to each key's and tenant's free share
-- in claim order; at worst a pass claims less than a batch and the next goes on. So the cost is
-- that of the batch and of the blocked keys' due jobs ahead of it, not of the number of keys.
-- A rate key's starts in the last interval are read under its rate_buckets row's lock and
-- written back by this statement, so the limit holds across schedulers: (s - $12, s] never
-- holds more than $11 starts, for any s.
WITH leader AS (
    SELECT 1 FROM scheduler_leader
    WHERE name = $5 AND holder = $6 AND epoch = $7 AND expires_at > $8::timestamptz
    FOR SHARE
), running_ck AS (
    -- running jobs per concurrency key, read only under a per-key cap
    SELECT r.concurrency_key AS ck, count(*) AS n FROM jobs r
    WHERE r.use_case = $1 AND r.status = 'running' AND r.concurrency_key IS NOT NULL
      AND $10::integer IS NOT NULL
    GROUP BY 1
), running_tenant AS (
    -- running jobs per tenant, read only under a per-tenant cap
    SELECT r.tenant, count(*) AS n FROM jobs r
    WHERE r.use_case = $1 AND r.status = 'running' AND $9::integer IS NOT NULL
    GROUP BY 1
), blocked_ck AS (
    SELECT r.ck FROM running_ck r WHERE r.n >= $10
), blocked_tenant AS (
    SELECT r.tenant FROM running_tenant r WHERE r.n >= $9
    UNION ALL
    /*include paused_tenants*/
), blocked_rk AS (
    SELECT b.rate_key FROM rate_buckets b
    WHERE b.use_case = $1 AND $11::integer IS NOT NULL AND b.blocked_until > $8::timestamptz
), due AS (
    -- NOT IN over a subquery runs as a hashed lookup per row: the walk stays in index order
    SELECT j.id, j.tenant, j.deadline, j.priority, coalesce(j.concurrency_key, '') AS ck,
           coalesce(j.rate_key, '') AS rk
    FROM jobs j
    WHERE j.use_case = $1 AND j.status = 'pending' AND j.run_at <= $8::timestamptz
      AND EXISTS (SELECT 1 FROM leader) AND NOT /*include use_case_paused*/
      AND coalesce(j.concurrency_key, '') NOT IN (SELECT ck FROM blocked_ck)
      AND coalesce(j.rate_key, '') NOT IN (SELECT rate_key FROM blocked_rk)
      AND j.tenant NOT IN (SELECT tenant FROM blocked_tenant)
      AND (j.expires_at IS NULL OR j.expires_at >= $8::timestamptz)  -- not due to expire
    ORDER BY j.priority DESC, j.deadline, j.id
    -- a subquery, not `$3 + $3 / 2`: a constant limit near the estimate of the rows that pass
    -- the three NOT INs (each estimated to keep half) makes a small backlog look read in full,
    -- and the planner then sorts a bitmap scan of all of it instead of walking the index
    LIMIT (SELECT $3 + $3 / 2)  -- KEYED_CLAIM_WINDOW
), buckets AS (
    -- a join, not `= ANY (array)`: a filter against an array of the due keys compares every
    -- bucket with every key (1,000 keys: 10 ms); the join probes the primary key once a key
    SELECT b.rate_key, b.starts_at, b.starts FROM rate_buckets b
    JOIN (SELECT DISTINCT rk FROM due WHERE rk <> '') k ON b.rate_key = k.rk
    WHERE b.use_case = $1 AND $11::integer IS NOT NULL
    FOR UPDATE OF b
), recent AS (
    -- each due key's starts inside the interval ending now: the arrays are in time order, so
    -- they are a suffix from `first`; `used` sums it. One small aggregate per key, no regrouping.
    SELECT b.rate_key, b.starts_at, b.starts, w.first, w.used FROM buckets b
    CROSS JOIN LATERAL (
        SELECT min(s.ord) AS first, sum(s.n) AS used
        FROM unnest(b.starts_at, b.starts) WITH ORDINALITY AS s(at, n, ord)
        WHERE s.at > $8::timestamptz - $12::float8 * interval '1 second'
    ) w
), within_key AS (
    -- each due job with its keys' and tenant's free share (a key never seen has all of it).
    -- The windows partition by bytes (COLLATE "C"): a partition needs equal keys, not their
    -- linguistic order, and a sort under the database's collation costs a strcoll per
    -- comparison (8% of this claim at 1,000 keys)
    SELECT d.*,
           CASE WHEN d.ck = '' OR $10::integer IS NULL THEN $3::bigint
                ELSE greatest(0, $10 - coalesce(rc.n, 0)) END AS ck_free,
           CASE WHEN d.rk = '' OR $11::integer IS NULL THEN $3::bigint
                ELSE greatest(0, $11 - coalesce(u.used, 0)) END AS rk_free,
           CASE WHEN $9::integer IS NULL THEN $3::bigint
                ELSE greatest(0, $9 - coalesce(rt.n, 0)) END AS t_free,
           row_number() OVER (PARTITION BY d.ck COLLATE "C"
                              ORDER BY d.priority DESC, d.deadline, d.id) AS ck_rank
    FROM due d
    LEFT JOIN running_ck rc ON rc.ck = d.ck
    LEFT JOIN recent u ON u.rate_key = d.rk
    LEFT JOIN running_tenant rt ON rt.tenant = d.tenant
), within_rate AS (
    SELECT w.*, row_number() OVER (PARTITION BY w.rk COLLATE "C"
                                   ORDER BY w.priority DESC, w.deadline, w.id) AS rk_rank
    FROM within_key w WHERE w.ck_rank <= w.ck_free
), within_tenant AS (
    SELECT w.*, row_number() OVER (PARTITION BY w.tenant COLLATE "C"
                                   ORDER BY w.priority DESC, w.deadline, w.id) AS t_rank
    FROM within_rate w
    WHERE w.rk_rank <= w.rk_free
), chosen AS (
    SELECT w.id FROM within_tenant w
    WHERE w.t_rank <= w.t_free
    ORDER BY w.priority DESC, w.deadline, w.id
    LIMIT least($3, greatest(0, $2 - (
        SELECT count(*) FROM jobs r WHERE r.use_case = $1 AND r.status = 'running')))
), picked AS (
    SELECT j.id FROM jobs j
    WHERE j.id = ANY (ARRAY(SELECT id FROM chosen)) AND j.status = 'pending'
    FOR UPDATE SKIP LOCKED
), claimed AS (
    /*include claim_lease*/
              , j.rate_key  -- for the rate buckets below
), attempts AS (
    INSERT INTO job_attempts (job_id, attempt, dispatched_at)
    SELECT id, attempts, $8::timestamptz FROM claimed
), started AS (
    -- each claimed rate key's window with this claim's starts appended (one entry, its time)
    SELECT c.rate_key, coalesce(r.starts_at[r.first:], '{}') || $8::timestamptz AS starts_at,
           coalesce(r.starts[r.first:], '{}') || c.n AS starts, coalesce(r.used, 0) + c.n AS used
    FROM (SELECT rate_key, count(*)::integer AS n FROM claimed
          WHERE $11::integer IS NOT NULL AND rate_key IS NOT NULL GROUP BY rate_key) c
    LEFT JOIN recent r ON r.rate_key = c.rate_key
), spent AS (
    -- blocked_until: when the interval next has room, if this claim filled it (the oldest
    -- starts leave it one by one; the first moment the rest sum below $11); only a full
    -- window is walked
    INSERT INTO rate_buckets AS b (use_case, rate_key, starts_at, starts, blocked_until)
    SELECT $1, s.rate_key, s.starts_at, s.starts, CASE WHEN s.used >= $11 THEN (
        SELECT x.at + $12::float8 * interval '1 second'
        FROM (SELECT u.at, sum(u.n) OVER (ORDER BY u.ord DESC) AS from_here
              FROM unnest(s.starts_at, s.starts) WITH ORDINALITY AS u(at, n, ord)) x
        WHERE x.from_here >= $11
        ORDER BY x.at DESC LIMIT 1) END
    FROM started s
    ON CONFLICT (use_case, rate_key) DO UPDATE SET
        starts_at = EXCLUDED.starts_at, starts = EXCLUDED.starts,
        blocked_until = EXCLUDED.blocked_until
), announced AS (
    /*include announce_claimed*/
)
SELECT id, tenant, use_case, job_type, payload, attempts, max_attempts, lease_token,
       lease_expires_at, deadline, run_at, created_at, trace_context, priority, missed,
       (SELECT count(*) FROM due) >= $3 + $3 / 2 AS saturated  -- more unblocked jobs lie beyond
FROM claimed, announced ORDER BY priority DESC, deadline, id;

-- name: list_rate_buckets
-- Each rate key's starts in the last $2 seconds and its due pending jobs, most waiting first.
-- $1 use case, $3 limit, $4 now.
SELECT b.rate_key, s.starts_at, s.starts, w.waiting
FROM rate_buckets b
CROSS JOIN LATERAL (
    SELECT coalesce(array_agg(x.at ORDER BY x.ord), '{}') AS starts_at,
           coalesce(array_agg(x.n ORDER BY x.ord), '{}') AS starts
    FROM unnest(b.starts_at, b.starts) WITH ORDINALITY AS x(at, n, ord)
    WHERE x.at > $4::timestamptz - $2::float8 * interval '1 second'
) s
CROSS JOIN LATERAL (
    SELECT count(*) AS waiting FROM jobs j
    WHERE j.use_case = b.use_case AND j.rate_key = b.rate_key AND j.status = 'pending'
      AND j.run_at <= $4::timestamptz
) w
WHERE b.use_case = $1 AND (cardinality(s.starts) > 0 OR w.waiting > 0)
ORDER BY w.waiting DESC, b.rate_key
LIMIT $3;

-- -- periodic jobs --------------------------------------------------------------------------

-- name: lock_tenant_schedules
-- Serializes a tenant's schedule creations (the count against its limit), for the transaction
-- only.
SELECT pg_advisory_xact_lock(hashtextextended('schedules:' || $1::text, 0));

-- name: count_api_schedules
SELECT count(*) FROM schedules WHERE tenant = $1 AND source = 'api';

-- name: create_schedule
INSERT INTO schedules (tenant, name, source, cron, interval_seconds, timezone, use_case,
                       job_type, payload, delay_tolerance_seconds, priority, missed, paused,
                       anchor_at, next_run_at, created_at, dedup_key)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::text::jsonb, $10, $11, $12, $13, $14, $15, $16, $17)
ON CONFLICT (tenant, name) DO NOTHING
RETURNING true;

-- name: sync_config_schedule
-- A changed cadence starts its ticks over (anchor and next tick from the new definition); a
-- schedule made through the API of the same tenant and name is left alone.
INSERT INTO schedules AS s (tenant, name, source, cron, interval_seconds, timezone, use_case,
                            job_type, payload, delay_tolerance_seconds, priority, missed,
                            paused, anchor_at, next_run_at, created_at, dedup_key)
VALUES ($1, $2, 'config', $3, $4, $5, $6, $7, $8::text::jsonb, $9, $10, $11, false, $12, $13,
        $12, $14)
ON CONFLICT (tenant, name) DO UPDATE SET
    use_case = EXCLUDED.use_case, job_type = EXCLUDED.job_type, payload = EXCLUDED.payload,
    delay_tolerance_seconds = EXCLUDED.delay_tolerance_seconds, priority = EXCLUDED.priority,
    missed = EXCLUDED.missed, dedup_key = EXCLUDED.dedup_key, cron = EXCLUDED.cron,
    interval_seconds = EXCLUDED.interval_seconds,
    timezone = EXCLUDED.timezone,
    anchor_at = CASE WHEN s.cron IS DISTINCT FROM EXCLUDED.cron
                       OR s.interval_seconds IS DISTINCT FROM EXCLUDED.interval_seconds
                       OR s.timezone <> EXCLUDED.timezone
                     THEN EXCLUDED.anchor_at ELSE s.anchor_at END,
    next_run_at = CASE WHEN s.cron IS DISTINCT FROM EXCLUDED.cron
                         OR s.interval_seconds IS DISTINCT FROM EXCLUDED.interval_seconds
                         OR s.timezone <> EXCLUDED.timezone
                       THEN EXCLUDED.next_run_at ELSE s.next_run_at END
WHERE s.source = 'config';

-- name: delete_config_schedules
DELETE FROM schedules
WHERE source = 'config' AND (tenant, name) NOT IN (SELECT * FROM unnest($1::text[], $2::text[]));

-- name: get_schedule
SELECT tenant, name, source, cron, interval_seconds, timezone, use_case, job_type,
       payload::text, delay_tolerance_seconds, priority, missed, dedup_key, paused,
       anchor_at, next_run_at, last_run_at, created_at
FROM schedules WHERE tenant = $1 AND name = $2;

-- name: list_schedules
SELECT tenant, name, source, cron, interval_seconds, timezone, use_case, job_type,
       payload::text, delay_tolerance_seconds, priority, missed, dedup_key, paused,
       anchor_at, next_run_at, last_run_at, created_at
FROM schedules
WHERE ($1::text IS NULL OR tenant = $1)
  AND ($2::text IS NULL OR (tenant, name) > ($2::text, $3::text))  -- keyset: after ($2, $3)
ORDER BY tenant, name
LIMIT $4;

-- name: set_schedule_paused
UPDATE schedules SET paused = $3, next_run_at = $4::timestamptz
WHERE tenant = $1 AND name = $2
RETURNING tenant, name, source, cron, interval_seconds, timezone, use_case, job_type,
          payload::text, delay_tolerance_seconds, priority, missed, dedup_key, paused,
          anchor_at, next_run_at, last_run_at, created_at;

-- name: delete_schedule
DELETE FROM schedules WHERE tenant = $1 AND name = $2 RETURNING true;

-- name: due_schedules
-- Served by schedules_due: the cost is that of the due schedules, whatever the jobs table holds.
SELECT tenant, name, source, cron, interval_seconds, timezone, use_case, job_type,
       payload::text, delay_tolerance_seconds, priority, missed, dedup_key, paused,
       anchor_at, next_run_at, last_run_at, created_at
FROM schedules WHERE NOT paused AND next_run_at <= $2::timestamptz
ORDER BY next_run_at, tenant, name
LIMIT $1;

-- -- periodic jobs, one statement a pass -----------------------------------------------------

-- name: enqueue_ticks
-- ScheduleStore.enqueue_ticks in one round trip: the compare-and-set of each tick (only the
-- ticks whose schedule still expects them move on: a racing scheduler waits on the row lock,
-- then finds next_run_at moved and skips it; the rows are locked in key order first, so two
-- schedulers moving many schedules at once wait for each other instead of deadlocking), then
-- the won ticks' jobs through jobs_enqueue, one call per
-- tenant (its quota and dedup rules are a tenant's), tenants in name order (so that two
-- schedulers lock tenant_usage rows in one order), answering outcomes instead of jobs.
-- $1-$5 the ticks (tenant, name, expected, next_run_at, ran_at); $6 each job's tick (its
-- ordinal in $1), $7-$21 the jobs' columns in enqueue_jobs' order ($7 ids ... $18 unique
-- rules, $19 concurrency keys, $20 rate keys, $21 expires_at), JSON as text; $22/$23 the
-- tenants' quotas (absent or null: none); $24 now. A column null for every tick or job may
-- come as a null
-- array: the unnest pads it with nulls.
-- Rows: (tick, null, null) for each won tick, (tick, job, outcome) for each of its jobs, `job`
-- the job's ordinal in $7.
WITH t AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[],
                         $5::timestamptz[]) WITH ORDINALITY
        AS t (tenant, name, expected, next_run_at, ran_at, tick)
), locked AS (
    -- a row another scheduler moved meanwhile is re-read once its lock is granted, and drops
    -- out here; the rows kept stay locked, so the update finds them where they were locked
    SELECT s.ctid AS row_id, t.tick, t.tenant, t.next_run_at, t.ran_at
    FROM schedules s JOIN t ON s.tenant = t.tenant AND s.name = t.name
    WHERE s.next_run_at = t.expected AND NOT s.paused
    ORDER BY s.tenant, s.name
    FOR UPDATE OF s
), won AS (
    UPDATE schedules s SET next_run_at = l.next_run_at,
                           last_run_at = coalesce(l.ran_at, s.last_run_at)
    FROM locked l
    WHERE s.ctid = l.row_id
    RETURNING l.tick, l.tenant
), j AS (
    SELECT * FROM unnest($6::bigint[], $7::uuid[], $8::text[], $9::text[], $10::text[],
                         $11::integer[], $12::timestamptz[], $13::timestamptz[], $14::integer[],
                         $15::text[], $16::text[], $17::text[], $18::text[], $19::text[],
                         $20::text[], $21::timestamptz[]) WITH ORDINALITY
        AS j (tick, id, use_case, job_type, payload, priority, run_at, deadline, max_attempts,
              backoff, dedup_key, trace_context, unique_rule, concurrency_key, rate_key,
              expires_at, ord)
), batches AS (
    SELECT w.tenant, q.quota,
           array_agg(j.ord ORDER BY j.ord) AS ords, array_agg(j.id ORDER BY j.ord) AS ids,
           array_agg(j.use_case ORDER BY j.ord) AS use_cases,
           array_agg(j.job_type ORDER BY j.ord) AS job_types,
           array_agg(j.payload::jsonb ORDER BY j.ord) AS payloads,
           array_agg(j.priority ORDER BY j.ord) AS priorities,
           array_agg(j.run_at ORDER BY j.ord) AS run_ats,
           array_agg(j.deadline ORDER BY j.ord) AS deadlines,
           array_agg(j.max_attempts ORDER BY j.ord) AS max_attempts,
           array_agg(j.backoff::jsonb ORDER BY j.ord) AS backoffs,
           array_agg(j.dedup_key ORDER BY j.ord) AS dedup_keys,
           array_agg(j.trace_context::jsonb ORDER BY j.ord) AS trace_contexts,
           array_agg(j.unique_rule::jsonb ORDER BY j.ord) AS unique_rules,
           array_agg(j.concurrency_key ORDER BY j.ord) AS concurrency_keys,
           array_agg(j.rate_key ORDER BY j.ord) AS rate_keys,
           array_agg(j.expires_at ORDER BY j.ord) AS expires_ats
    FROM won w
    JOIN j ON j.tick = w.tick
    LEFT JOIN unnest($22::text[], $23::bigint[]) AS q (tenant, quota) ON q.tenant = w.tenant
    GROUP BY w.tenant, q.quota
), stored AS (
    SELECT b.ords[e.ord] AS job, e.outcome
    FROM (SELECT * FROM batches ORDER BY tenant) b
    CROSS JOIN LATERAL jobs_enqueue(b.tenant, b.quota, b.ids, b.use_cases, b.job_types,
                                    b.payloads, b.priorities, b.run_ats, b.deadlines,
                                    b.max_attempts, b.backoffs, b.dedup_keys, b.trace_contexts,
                                    b.unique_rules, $24::timestamptz, b.concurrency_keys,
                                    b.rate_keys, b.expires_ats) e
), deltas AS (
    -- the feasibility summary's deltas, as in enqueue_jobs
    INSERT INTO feasibility_pending_deltas (use_case, priority, bucket, n)
    SELECT j.use_case, j.priority, jobs_deadline_second(j.deadline), count(*)
    FROM stored s JOIN j ON j.ord = s.job
    WHERE current_setting('jobs.feasibility', true) IS DISTINCT FROM 'off' AND s.outcome IN ('created', 'quota_exceeded')
    GROUP BY 1, 2, 3
)
SELECT w.tick, NULL::bigint AS job, NULL::text AS outcome FROM won w
UNION ALL
SELECT j.tick, s.job, s.outcome FROM stored s JOIN j ON j.ord = s.job;


-- name: find_cancel_requested
-- The workers' cancellation poll: of the leases asked about ($1 ids, $2 attempts, $3 tokens),
-- those whose job is marked for cancellation and still running under that very lease. A read
-- (it extends nothing), one jobs_pkey probe per id, whatever the table holds; each lease once.
SELECT j.id, j.attempts, j.lease_token
FROM jobs j
WHERE j.id = ANY ($1::uuid[]) AND j.status = 'running' AND j.cancel_requested
  AND (j.id, j.attempts, j.lease_token) IN (
      SELECT * FROM unnest($1::uuid[], $2::integer[], $3::uuid[]));

-- ---------------------------------------------------------------------------------------------
-- Miss policy expire (migration 0010): pending jobs past their expires_at end expired.

-- name: expire_jobs
-- Up to $2 pending jobs of the use cases $1 whose expires_at (deadline + grace) is before $3
-- (now; one exactly at it is still due) end expired: never dispatched, finished now, the
-- reason in last_error. Served by jobs_expiry_idx; rows another transaction holds (a claim)
-- are skipped. The tenant_usage trigger counts them out of the active jobs.
WITH picked AS (
    SELECT j.id FROM jobs j
    WHERE j.use_case = ANY ($1::text[]) AND j.status = 'pending'
      AND j.expires_at IS NOT NULL AND j.expires_at < $3::timestamptz
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
UPDATE jobs j SET
    status = 'expired',
    finished_at = $3::timestamptz,
    updated_at = $3::timestamptz,
    last_error = 'expired: its deadline ' || to_char(j.deadline AT TIME ZONE 'UTC',
        'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') || ' plus a grace of '
        || extract(epoch FROM j.expires_at - j.deadline)::float8 || ' s passed before it could start'
WHERE j.id = ANY (ARRAY(SELECT id FROM picked))
RETURNING j.id, j.tenant, j.use_case, j.deadline, j.expires_at;

-- -- deadline feasibility (migration 0012, jobs_server/feasibility.py) -----------------------

-- name: fold_feasibility_pending
-- The leader folds what the triggers appended since its last pass into the summary. Deltas of
-- transactions still open are not visible here and stay for the next pass.
WITH d AS (
    DELETE FROM feasibility_pending_deltas RETURNING use_case, priority, bucket, n
), s AS (
    SELECT use_case, priority, bucket, sum(n) AS n FROM d GROUP BY 1, 2, 3 HAVING sum(n) <> 0
)
INSERT INTO feasibility_pending AS p (use_case, priority, bucket, n)
SELECT use_case, priority, bucket, n FROM s
ON CONFLICT (use_case, priority, bucket) DO UPDATE SET n = p.n + excluded.n;

-- name: drop_empty_feasibility_buckets
DELETE FROM feasibility_pending WHERE n = 0;

-- name: fold_feasibility_load
WITH d AS (
    DELETE FROM feasibility_load_deltas RETURNING use_case, running, finished, busy_seconds
), s AS (
    SELECT use_case, sum(running) AS running, sum(finished) AS finished,
           sum(busy_seconds) AS busy_seconds
    FROM d GROUP BY 1
)
INSERT INTO feasibility_load AS l (use_case, running, finished, busy_seconds)
SELECT use_case, running, finished, busy_seconds FROM s
ON CONFLICT (use_case) DO UPDATE SET running = l.running + excluded.running,
                                     finished = l.finished + excluded.finished,
                                     busy_seconds = l.busy_seconds + excluded.busy_seconds;

-- name: get_feasibility_loads
SELECT use_case, running, finished, busy_seconds FROM feasibility_load ORDER BY use_case;

-- name: rebuild_feasibility
-- Counted afresh from `jobs` (the leader's first pass), in one REPEATABLE READ transaction
-- with the delete of the deltas it saw: changes committed later keep their deltas. Heals a
-- summary that drifted while sessions ran with jobs.feasibility = 'off'.
WITH gone_p AS (
    DELETE FROM feasibility_pending_deltas
), gone_l AS (
    DELETE FROM feasibility_load_deltas
), gone_s AS (
    DELETE FROM feasibility_pending
), running AS (
    SELECT use_case, count(*) AS n FROM jobs WHERE status = 'running' GROUP BY 1
), zeroed AS (
    UPDATE feasibility_load l SET running = 0
    WHERE l.use_case NOT IN (SELECT use_case FROM running)
)
INSERT INTO feasibility_load AS l (use_case, running)
SELECT use_case, n FROM running
ON CONFLICT (use_case) DO UPDATE SET running = excluded.running;

-- name: rebuild_feasibility_pending
INSERT INTO feasibility_pending (use_case, priority, bucket, n)
SELECT use_case, priority, jobs_deadline_second(deadline), count(*)
FROM jobs WHERE status = 'pending' GROUP BY 1, 2, 3;

-- name: set_feasibility_rates
UPDATE feasibility_load l SET throughput = r.throughput, mean_duration = r.mean_duration,
                              rates_at = $4::timestamptz
FROM unnest($1::text[], $2::float8[], $3::float8[]) AS r (use_case, throughput, mean_duration)
WHERE l.use_case = r.use_case;

-- name: get_feasibility_load
SELECT running, throughput, mean_duration FROM feasibility_load WHERE use_case = $1;

-- name: get_feasibility_pending
-- Per second of deadline up to $2 (an hour ahead), per minute past it: the answer stays small
-- when deadlines spread over days.
SELECT priority,
       CASE WHEN bucket < $2 THEN bucket ELSE bucket - bucket % 60 END AS bucket,
       sum(n) AS n
FROM feasibility_pending
WHERE use_case = $1 AND n <> 0
GROUP BY 1, 2
ORDER BY 1 DESC, 2;

-- -- pruning flow-control state -----------------------------------------------------------

-- name: prune_rate_buckets
-- One step of a sweep in key order: the next $3 rows after ($1, $2) ($1 null: from the first)
-- are looked at, and those whose newest start (the last of starts_at, which claims append in
-- order) is at least the use case's window old ($4/$5, else $6 seconds) are deleted: a claim
-- counts only starts inside the window, so it would count none of theirs. The staleness is
-- judged on the locked row (a claim that wrote it meanwhile keeps it); rows a claim holds are
-- skipped. The sweep's cost per step is bounded by $3, whatever the table holds.
-- $7 now. Answers the rows deleted and the last key looked at (null: the end was reached).
WITH scanned AS (
    SELECT b.use_case, b.rate_key FROM rate_buckets b
    WHERE $1::text IS NULL OR (b.use_case, b.rate_key) > ($1, $2::text)
    ORDER BY b.use_case, b.rate_key
    LIMIT $3
), doomed AS (
    SELECT b.ctid AS row_id FROM rate_buckets b
    JOIN scanned s ON s.use_case = b.use_case AND s.rate_key = b.rate_key
    LEFT JOIN unnest($4::text[], $5::float8[]) AS w (use_case, seconds) ON w.use_case = b.use_case
    WHERE coalesce(b.starts_at[cardinality(b.starts_at)], '-infinity')
          <= $7::timestamptz - coalesce(w.seconds, $6::float8) * interval '1 second'
    FOR UPDATE OF b SKIP LOCKED
), gone AS (
    DELETE FROM rate_buckets b USING doomed d WHERE b.ctid = d.row_id RETURNING 1
)
SELECT (SELECT count(*) FROM gone) AS deleted,
       (SELECT count(*) FROM scanned) AS scanned,
       l.use_case, l.rate_key
FROM (SELECT NULL) x
LEFT JOIN LATERAL (
    SELECT use_case, rate_key FROM scanned ORDER BY use_case DESC, rate_key DESC LIMIT 1
) l ON true;

-- name: prune_pause_history
-- Of the $2 oldest changes (ids follow the store's clock), those made more than $1 seconds
-- before $3: bounded, and served by the primary key.
DELETE FROM pause_history
WHERE id = ANY (ARRAY(
    SELECT h.id FROM (SELECT id, changed_at FROM pause_history ORDER BY id LIMIT $2) h
    WHERE h.changed_at < $3::timestamptz - $1 * interval '1 second'));

-- -- webhooks (migration 0020, jobs_server/webhooks.py) -------------------------------------

-- name: lock_tenant_webhooks
-- Serializes a tenant's subscription creations (the count against its limit), for the
-- transaction only.
SELECT pg_advisory_xact_lock(hashtextextended('webhooks:' || $1::text, 0));

-- name: count_webhooks
SELECT count(*) FROM webhook_subscriptions WHERE tenant = $1;

-- name: create_webhook
INSERT INTO webhook_subscriptions (id, tenant, url, event_types, use_case, description, secret,
                                   paused, created_at)
VALUES ($1, $2, $3, $4::text[], $5, $6, $7, false, $8)
RETURNING id, tenant, url, event_types, use_case, description, paused, created_at;

-- name: list_webhooks
-- A tenant's subscriptions ($1; null: every tenant's), oldest first.
SELECT id, tenant, url, event_types, use_case, description, paused, created_at
FROM webhook_subscriptions
WHERE $1::text IS NULL OR tenant = $1
ORDER BY tenant, created_at, id
LIMIT $2;

-- name: get_webhook
SELECT id, tenant, url, event_types, use_case, description, paused, created_at
FROM webhook_subscriptions WHERE id = $1 AND ($2::text IS NULL OR tenant = $2);

-- name: set_webhook_paused
UPDATE webhook_subscriptions SET paused = $3
WHERE id = $1 AND ($2::text IS NULL OR tenant = $2)
RETURNING id, tenant, url, event_types, use_case, description, paused, created_at;

-- name: delete_webhook
-- Its delivery log goes with it (ON DELETE CASCADE); delivery jobs still pending find no
-- subscription at send time and end without a request.
DELETE FROM webhook_subscriptions WHERE id = $1 AND ($2::text IS NULL OR tenant = $2)
RETURNING id;

-- name: get_webhook_target
SELECT id, url, secret, paused FROM webhook_subscriptions WHERE id = $1;

-- name: list_webhook_deliveries
-- A subscription's deliveries, newest first (job ids are UUIDv7), from before the cursor $2;
-- served by webhook_deliveries_log_idx and the jobs' primary key.
SELECT d.job_id, d.event_id, d.event_type, j.status::text AS status, j.attempts, j.result,
       j.last_error, j.created_at, j.finished_at
FROM webhook_deliveries d
JOIN jobs j ON j.id = d.job_id
WHERE d.subscription_id = $1 AND ($2::uuid IS NULL OR d.job_id < $2)
ORDER BY d.job_id DESC
LIMIT $3;

-- name: emit_webhook_event
SELECT webhook_emit($1, $2, $3, $4::jsonb, $5::timestamptz);

-- name: fan_out_webhook_events
-- The leader: up to $1 outbox events (oldest first; rows another transaction holds are
-- skipped), each made into one delivery job (use case $3, job type $4) per subscription of its
-- tenant that wants it, and deleted, in one statement: an event becomes its deliveries exactly
-- once across failovers (webhook_deliveries_once guards a second pass regardless). Job ids are
-- UUIDv7 of $2 (the store's now); the jobs run at once, within $5 seconds, with $6 attempts and
-- the backoff $7. The tenants' active counts take the new jobs (no quota: a delivery is never
-- refused). Returns the deliveries made.
WITH taken AS (
    DELETE FROM webhook_events e
    WHERE e.seq = ANY (ARRAY(
        SELECT seq FROM webhook_events ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED))
    RETURNING e.id, e.tenant, e.event_type, e.use_case, e.body
), pairs AS MATERIALIZED (
    SELECT t.id AS event_id, t.tenant, t.event_type, t.body, s.id AS subscription_id,
           encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid()) PLACING
               substring(int8send(floor(extract(epoch FROM $2::timestamptz) * 1000)::bigint)
                         FROM 3) FROM 1 FOR 6), 52, 1), 53, 1), 'hex')::uuid AS job_id
    FROM taken t
    JOIN webhook_subscriptions s
      ON s.tenant = t.tenant AND NOT s.paused AND t.event_type = ANY (s.event_types)
     AND (s.use_case IS NULL OR t.use_case IS NULL OR s.use_case = t.use_case)
), links AS (
    INSERT INTO webhook_deliveries (job_id, subscription_id, event_id, event_type)
    SELECT job_id, subscription_id, event_id, event_type FROM pairs
    ON CONFLICT ON CONSTRAINT webhook_deliveries_once DO NOTHING
    RETURNING job_id
), made AS (
    INSERT INTO jobs (id, tenant, use_case, job_type, payload, priority, run_at, deadline,
                      max_attempts, backoff, created_at, updated_at)
    SELECT p.job_id, p.tenant, $3, $4,
           jsonb_build_object('subscription_id', p.subscription_id,
                              'event', p.body || jsonb_build_object('id', p.event_id)),
           0, $2::timestamptz, $2::timestamptz + $5 * interval '1 second', $6, $7::jsonb,
           $2::timestamptz, $2::timestamptz
    FROM pairs p JOIN links l USING (job_id)
    ORDER BY p.tenant
    RETURNING id, tenant
), usage AS (
    INSERT INTO tenant_usage AS u (tenant, active)
    SELECT tenant, count(*) FROM made GROUP BY tenant ORDER BY tenant
    ON CONFLICT (tenant) DO UPDATE SET active = u.active + excluded.active
)
SELECT (SELECT count(*) FROM taken) AS events, (SELECT count(*) FROM made) AS deliveries;

-- -- workflows and batches (migration 0018, docs/workflows.md) -------------------------------

-- name: link_jobs
-- After enqueue_jobs, in its transaction: the jobs $3 wait for their parents (edges $7 -> $8).
-- Answers the parents that are not jobs of tenant $1 (nothing linked then). $2 now.
SELECT jobs_link($1, $2::timestamptz, $3::uuid[], $4::text[], $5::float8[], $6::float8[],
                 $7::uuid[], $8::uuid[]) AS missing;

-- name: create_batch
INSERT INTO batches (id, tenant, callback, callback_job_id, created_at)
VALUES ($1, $2, $3::text::jsonb, $4, $5::timestamptz);

-- name: add_batch_jobs
-- The jobs $3 join batch $1 of tenant $2, under the batch row's lock (the lock a job's end
-- takes to count it), while the batch is unfinished and holds at most $4 jobs after. Answers
-- 'ok', 'finished' or 'full'; no row: no such batch of the tenant.
WITH b AS (
    SELECT id, total, finished_at FROM batches WHERE id = $1 AND tenant = $2 FOR UPDATE
), grown AS (
    UPDATE batches s SET total = s.total + cardinality($3::uuid[]),
                         remaining = s.remaining + cardinality($3::uuid[])
    FROM b
    WHERE s.id = b.id AND b.finished_at IS NULL AND b.total + cardinality($3::uuid[]) <= $4
    RETURNING s.id
), members AS (
    INSERT INTO batch_jobs (job_id, batch_id) SELECT unnest($3::uuid[]), id FROM grown
)
SELECT CASE WHEN b.finished_at IS NOT NULL THEN 'finished'
            WHEN NOT EXISTS (SELECT 1 FROM grown) THEN 'full'
            ELSE 'ok' END
FROM b;

-- name: get_batch
SELECT id, tenant, total, remaining, succeeded, dead, cancelled, expired, failed_ids,
       callback IS NOT NULL AS has_callback,
       CASE WHEN callback IS NOT NULL AND finished_at IS NOT NULL THEN callback_job_id END
           AS callback_job_id,
       created_at, finished_at
FROM batches WHERE id = $1 AND ($2::text IS NULL OR tenant = $2);

-- name: get_parents
SELECT j.id, j.job_type, j.status, j.result, j.last_error
FROM job_edges e JOIN jobs j ON j.id = e.parent_id
WHERE e.child_id = $1 AND ($2::text IS NULL OR j.tenant = $2)
ORDER BY j.id;

-- name: get_job_graph
-- The jobs linked to $1 over edges either way, the job itself first, at most $3 (the walk
-- stops there: a recursive query is read only as far as its consumer asks).
WITH RECURSIVE linked (id) AS (
    SELECT j.id FROM jobs j WHERE j.id = $1 AND ($2::text IS NULL OR j.tenant = $2)
    UNION
    SELECT x.id FROM linked l
    CROSS JOIN LATERAL (
        SELECT e.parent_id AS id FROM job_edges e WHERE e.child_id = l.id
        UNION ALL
        SELECT e.child_id FROM job_edges e WHERE e.parent_id = l.id
    ) x
), picked AS (
    SELECT id, row_number() OVER () AS n FROM (SELECT id FROM linked LIMIT $3) l
)
SELECT j FROM picked p JOIN jobs j ON j.id = p.id ORDER BY p.n;

-- name: get_job_links
SELECT parent_id, child_id FROM job_edges
WHERE child_id = ANY ($1::uuid[]) AND parent_id = ANY ($1::uuid[])
ORDER BY parent_id, child_id;
