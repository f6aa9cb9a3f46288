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
