-- Jobs, their attempts, tenant usage (for quotas), idempotency keys and the scheduler leader.

CREATE TYPE job_status AS ENUM ('pending', 'running', 'succeeded', 'dead', 'cancelled');

CREATE TABLE jobs (
    id               uuid PRIMARY KEY,
    tenant           text NOT NULL,
    use_case         text NOT NULL,
    job_type         text NOT NULL,
    payload          jsonb NOT NULL,
    status           job_status NOT NULL DEFAULT 'pending',
    priority         integer NOT NULL DEFAULT 0,
    run_at           timestamptz NOT NULL,
    deadline         timestamptz NOT NULL,
    attempts         integer NOT NULL DEFAULT 0,
    max_attempts     integer NOT NULL,
    backoff          jsonb NOT NULL,
    lease_token      uuid,
    lease_expires_at timestamptz,
    dedup_key        text,
    result           jsonb,
    last_error       text,
    cancel_requested boolean NOT NULL DEFAULT false,
    deadline_missed  boolean NOT NULL DEFAULT false,
    trace_context    jsonb,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    dispatched_at    timestamptz,
    finished_at      timestamptz,
    -- deadline >= run_at holds at enqueue (the API checks it); a retry may run after it.
    CONSTRAINT jobs_attempts_in_range CHECK (attempts >= 0 AND attempts <= max_attempts)
);

-- Claim: pending jobs of a use case in deadline order (then priority, then age; ids are UUIDv7).
CREATE INDEX jobs_claim_idx ON jobs (use_case, deadline, priority DESC, id)
    WHERE status = 'pending';
-- Fair claim: the same order within one tenant, and a skip scan over a use case's tenants.
CREATE INDEX jobs_claim_tenant_idx ON jobs (use_case, tenant, deadline, priority DESC, id)
    WHERE status = 'pending';
-- Running set: bounded by capacity; serves free-slot counts and the lease reaper.
CREATE INDEX jobs_running_idx ON jobs (use_case, tenant, lease_expires_at)
    WHERE status = 'running';
-- Dedup: one active job per (tenant, use case, key), race-free.
CREATE UNIQUE INDEX jobs_dedup_idx ON jobs (tenant, use_case, dedup_key)
    WHERE dedup_key IS NOT NULL AND status IN ('pending', 'running');
-- Listing, newest first, per tenant and per tenant and status.
CREATE INDEX jobs_tenant_list_idx ON jobs (tenant, id DESC);
CREATE INDEX jobs_tenant_status_list_idx ON jobs (tenant, status, id DESC);
-- Pruning of finished jobs per use case.
CREATE INDEX jobs_finished_idx ON jobs (use_case, finished_at)
    WHERE status IN ('succeeded', 'dead', 'cancelled');

CREATE TABLE job_attempts (
    job_id        uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt       integer NOT NULL,
    outcome       text NOT NULL DEFAULT 'running',
    worker_id     text,
    dispatched_at timestamptz NOT NULL DEFAULT now(),
    started_at    timestamptz,
    finished_at   timestamptz,
    error_type    text,
    error_message text,
    traceback     text,
    PRIMARY KEY (job_id, attempt)
);

-- Active (pending + running) jobs per tenant. Enqueue locks the tenant's row to enforce the
-- quota; the trigger below keeps the count right on every status change, so no hot path counts.
CREATE TABLE tenant_usage (
    tenant text PRIMARY KEY,
    active bigint NOT NULL DEFAULT 0 CHECK (active >= 0)
);

CREATE FUNCTION jobs_track_active() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    -- Ordered by tenant so that concurrent statements lock usage rows in one order.
    FOR r IN
        SELECT n.tenant,
               sum((n.status IN ('pending', 'running'))::int
                   - (o.status IN ('pending', 'running'))::int) AS delta
        FROM old_rows o JOIN new_rows n USING (id)
        WHERE n.status IS DISTINCT FROM o.status
        GROUP BY n.tenant
        ORDER BY n.tenant
    LOOP
        IF r.delta <> 0 THEN
            UPDATE tenant_usage SET active = active + r.delta WHERE tenant = r.tenant;
        END IF;
    END LOOP;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_track_active_trg AFTER UPDATE ON jobs
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION jobs_track_active();

-- Enqueue a batch for one tenant in one round trip: insert (skipping active duplicates), then
-- take the tenant's usage row lock and grant up to the quota, deleting what is over it. The
-- lock is taken last so it is held only for the end of the transaction.
CREATE FUNCTION jobs_enqueue(
    p_tenant text, p_quota bigint,
    p_ids uuid[], p_use_cases text[], p_job_types text[], p_payloads jsonb[],
    p_priorities integer[], p_run_ats timestamptz[], p_deadlines timestamptz[],
    p_max_attempts integer[], p_backoffs jsonb[], p_dedup_keys text[], p_trace_contexts jsonb[]
) RETURNS TABLE (ord integer, outcome text, job jobs) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_inserted uuid[];
    v_excess uuid[] := '{}';
    v_active bigint;
    v_granted bigint;
BEGIN
    WITH input AS (
        SELECT * FROM unnest(p_ids, p_use_cases, p_job_types, p_payloads, p_priorities, p_run_ats,
                             p_deadlines, p_max_attempts, p_backoffs, p_dedup_keys,
                             p_trace_contexts)
            WITH ORDINALITY AS i(id, use_case, job_type, payload, priority, run_at, deadline,
                                 max_attempts, backoff, dedup_key, trace_context, ord)
    ), ins AS (
        INSERT INTO jobs (id, tenant, use_case, job_type, payload, priority, run_at, deadline,
                          max_attempts, backoff, dedup_key, trace_context)
        SELECT id, p_tenant, use_case, job_type, payload, priority, run_at, deadline,
               max_attempts, backoff, dedup_key, trace_context
        FROM input
        -- one lock order for dedup keys across concurrent batches (no deadlocks)
        ORDER BY use_case, dedup_key NULLS LAST, ord
        ON CONFLICT (tenant, use_case, dedup_key)
            WHERE dedup_key IS NOT NULL AND status IN ('pending', 'running')
            DO NOTHING
        RETURNING id
    )
    SELECT coalesce(array_agg(ins.id), '{}') INTO v_inserted FROM ins;

    IF cardinality(v_inserted) > 0 THEN
        INSERT INTO tenant_usage (tenant) VALUES (p_tenant) ON CONFLICT (tenant) DO NOTHING;
        SELECT u.active INTO v_active FROM tenant_usage u WHERE u.tenant = p_tenant FOR UPDATE;
        v_granted := cardinality(v_inserted);
        IF p_quota IS NOT NULL THEN
            v_granted := least(v_granted, greatest(p_quota - v_active, 0));
        END IF;
        IF v_granted < cardinality(v_inserted) THEN
            -- the batch's latest items lose: keep the first v_granted in request order
            SELECT coalesce(array_agg(x.id), '{}') INTO v_excess FROM (
                SELECT i.id FROM unnest(p_ids) WITH ORDINALITY AS i(id, ord)
                WHERE i.id = ANY (v_inserted)
                ORDER BY i.ord OFFSET v_granted
            ) x;
            DELETE FROM jobs WHERE id = ANY (v_excess);
        END IF;
        UPDATE tenant_usage SET active = active + v_granted WHERE tenant = p_tenant;
    END IF;

    RETURN QUERY
        SELECT i.ord::integer,
               CASE WHEN (f.job).id = i.id THEN 'created'
                    WHEN (f.job).id IS NOT NULL THEN 'deduplicated'
                    WHEN i.id = ANY (v_excess) THEN 'quota_exceeded'
                    ELSE 'retry' END,
               f.job
        FROM unnest(p_ids, p_use_cases, p_dedup_keys) WITH ORDINALITY AS i(id, use_case, dedup_key, ord)
        LEFT JOIN LATERAL (
            (SELECT j AS job FROM jobs j WHERE j.id = i.id)
            UNION ALL
            (SELECT j AS job FROM jobs j
             WHERE i.dedup_key IS NOT NULL AND j.tenant = p_tenant AND j.use_case = i.use_case
               AND j.dedup_key = i.dedup_key AND j.status IN ('pending', 'running'))
            LIMIT 1
        ) f ON true
        ORDER BY i.ord;
END
$$;

CREATE TABLE idempotency_keys (
    tenant       text NOT NULL,
    key          text NOT NULL,
    request_hash text NOT NULL,
    response     jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, key)
);
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);

CREATE TABLE scheduler_leader (
    name       text PRIMARY KEY,
    holder     text NOT NULL,
    epoch      bigint NOT NULL,
    expires_at timestamptz NOT NULL
);
