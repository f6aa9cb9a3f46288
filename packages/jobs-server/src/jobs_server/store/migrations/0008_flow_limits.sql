-- Flow limits: a job may name a concurrency key (at most the use case's limit of its jobs run
-- at once) and a rate key (its jobs start at most the use case's N per interval). The claim
-- (claim_due_jobs_keyed) visits each (concurrency key, rate key, tenant) with pending jobs once,
-- so one key's or tenant's backlog is never walked to reach the others'. Keys are never empty
-- (at least one character), so the index uses '' for "no key", and a row comparison steps from
-- group to group.
ALTER TABLE jobs ADD COLUMN concurrency_key text, ADD COLUMN rate_key text;

CREATE INDEX jobs_claim_keyed_idx ON jobs (
    use_case, coalesce(concurrency_key, ''), coalesce(rate_key, ''), tenant,
    deadline, priority DESC, id
) WHERE status = 'pending';
-- A rate key's waiting jobs, for the dashboard; only keyed jobs pay for it.
CREATE INDEX jobs_rate_waiting_idx ON jobs (use_case, rate_key, run_at)
    WHERE status = 'pending' AND rate_key IS NOT NULL;

-- The starts of one rate key in the last interval, one entry per claim (a claim's starts share
-- its time), so at most `starts` entries; pruned by every claim that writes the row. Written in
-- the claim's statement under the row's lock and the leader fence: exact across failover.
CREATE TABLE rate_buckets (
    use_case  text NOT NULL,
    rate_key  text NOT NULL,
    starts_at timestamptz[] NOT NULL,
    starts    integer[] NOT NULL,
    PRIMARY KEY (use_case, rate_key)
);

-- jobs_enqueue stores the two keys (the last two parameters).
DROP FUNCTION jobs_enqueue(text, bigint, uuid[], text[], text[], jsonb[], integer[],
                           timestamptz[], timestamptz[], integer[], jsonb[], text[], jsonb[],
                           timestamptz);

CREATE FUNCTION jobs_enqueue(
    p_tenant text, p_quota bigint,
    p_ids uuid[], p_use_cases text[], p_job_types text[], p_payloads jsonb[],
    p_priorities integer[], p_run_ats timestamptz[], p_deadlines timestamptz[],
    p_max_attempts integer[], p_backoffs jsonb[], p_dedup_keys text[], p_trace_contexts jsonb[],
    p_now timestamptz, p_concurrency_keys text[], p_rate_keys text[]
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
                             p_trace_contexts, p_concurrency_keys, p_rate_keys)
            WITH ORDINALITY AS i(id, use_case, job_type, payload, priority, run_at, deadline,
                                 max_attempts, backoff, dedup_key, trace_context,
                                 concurrency_key, rate_key, ord)
    ), ins AS (
        INSERT INTO jobs (id, tenant, use_case, job_type, payload, priority, run_at, deadline,
                          max_attempts, backoff, dedup_key, trace_context, created_at, updated_at,
                          concurrency_key, rate_key)
        SELECT id, p_tenant, use_case, job_type, payload, priority, run_at, deadline,
               max_attempts, backoff, dedup_key, trace_context, p_now, p_now,
               concurrency_key, rate_key
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
