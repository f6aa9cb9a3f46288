-- Miss policy `expire`: a job still pending once its deadline plus a grace has passed ends in
-- the terminal state 'expired', never dispatched. jobs.expires_at is that time (deadline +
-- grace), set by the enqueue; NULL: the job runs late (policy run_late), as before. The
-- scheduler's expirer ends such jobs right before each claim (expire_jobs in queries.sql).
--
-- A value added to an enum cannot be used in the transaction that added it ("unsafe use of
-- new value"), and migrate() runs every pending migration in one transaction: nothing below
-- (nor a later migration applied in the same run) writes 'expired'. The partial indexes name
-- the states a job leaves instead, NOT IN ('pending', 'running'): every finished state,
-- expired among them, and the planner proves a query's IN list of finished states implies it.
ALTER TYPE job_status ADD VALUE IF NOT EXISTS 'expired';

ALTER TABLE jobs ADD COLUMN expires_at timestamptz;
ALTER TABLE job_stats_minute ADD COLUMN expired integer NOT NULL DEFAULT 0;

-- The expiry sweep: a use case's pending jobs that can expire, by when. Partial: jobs that run
-- late (most) never write to it.
CREATE INDEX jobs_expiry_idx ON jobs (use_case, expires_at)
    WHERE status = 'pending' AND expires_at IS NOT NULL;

-- Pruning and the finished rollup, over every finished state (was succeeded, dead, cancelled).
DROP INDEX jobs_finished_idx;
CREATE INDEX jobs_finished_idx ON jobs (use_case, finished_at)
    WHERE status NOT IN ('pending', 'running');
-- The cross-tenant list of jobs that did not succeed (was dead, cancelled), expired now too.
DROP INDEX jobs_failed_list_idx;
CREATE INDEX jobs_failed_list_idx ON jobs (status, id DESC)
    WHERE status NOT IN ('pending', 'running', 'succeeded');

DROP FUNCTION jobs_enqueue(text, bigint, uuid[], text[], text[], jsonb[], integer[],
                           timestamptz[], timestamptz[], integer[], jsonb[], text[], jsonb[],
                           jsonb[], timestamptz, text[], text[]);

-- As in 0009, and: p_expires_ats, one per job (NULL: runs late), stored in jobs.expires_at.
CREATE FUNCTION jobs_enqueue(
    p_tenant text, p_quota bigint,
    p_ids uuid[], p_use_cases text[], p_job_types text[], p_payloads jsonb[],
    p_priorities integer[], p_run_ats timestamptz[], p_deadlines timestamptz[],
    p_max_attempts integer[], p_backoffs jsonb[], p_dedup_keys text[], p_trace_contexts jsonb[],
    p_unique_rules jsonb[],
    p_now timestamptz, p_concurrency_keys text[], p_rate_keys text[],
    p_expires_ats timestamptz[]
) RETURNS TABLE (ord integer, outcome text, job jobs) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_inserted uuid[];
    v_excess uuid[] := '{}';
    v_matched uuid[];
    v_active bigint;
    v_granted bigint;
BEGIN
    -- calls without a rule (dedup_key alone, or no key) skip the locks and the check; then
    -- v_matched stays null, which the unnests below read as all null
    IF EXISTS (SELECT 1 FROM unnest(p_unique_rules) AS r(rule) WHERE r.rule IS NOT NULL) THEN
        PERFORM pg_advisory_xact_lock(k.lock_id)
        FROM (
            SELECT DISTINCT hashtextextended(p_tenant || chr(31) || i.use_case || chr(31)
                                             || i.dedup_key, 0) AS lock_id
            FROM unnest(p_use_cases, p_dedup_keys, p_unique_rules)
                AS i(use_case, dedup_key, rule)
            WHERE i.dedup_key IS NOT NULL AND i.rule IS NOT NULL
            ORDER BY 1
        ) k;

        -- the latest job each item's rule holds (UniqueRule.holds in jobs_schema): active, or
        -- in its window. A statement of its own, so it sees every job committed before the
        -- locks were granted; the insert's conflict still keeps out a batch's second job of a
        -- key.
        SELECT array_agg(m.id ORDER BY i.ord) INTO v_matched
        FROM unnest(p_use_cases, p_dedup_keys, p_unique_rules)
            WITH ORDINALITY AS i(use_case, dedup_key, rule, ord)
        LEFT JOIN LATERAL (
            SELECT j.id FROM jobs j
            WHERE i.rule IS NOT NULL AND j.tenant = p_tenant AND j.use_case = i.use_case
              AND j.dedup_key = i.dedup_key
              AND (j.status IN ('pending', 'running') OR CASE i.rule->>'window'
                    WHEN 'enqueued' THEN j.created_at > p_now
                        - make_interval(secs => (i.rule->>'seconds')::double precision)
                    WHEN 'finished' THEN j.finished_at > p_now
                        - make_interval(secs => (i.rule->>'seconds')::double precision)
                    WHEN 'states' THEN j.status::text IN
                        (SELECT jsonb_array_elements_text(i.rule->'states'))
                  END)
            ORDER BY j.created_at DESC
            LIMIT 1
        ) m ON true;
    END IF;

    WITH input AS (
        SELECT * FROM unnest(p_ids, p_use_cases, p_job_types, p_payloads, p_priorities, p_run_ats,
                             p_deadlines, p_max_attempts, p_backoffs, p_dedup_keys,
                             p_trace_contexts, p_unique_rules, v_matched, p_concurrency_keys,
                             p_rate_keys, p_expires_ats)
            WITH ORDINALITY AS i(id, use_case, job_type, payload, priority, run_at, deadline,
                                 max_attempts, backoff, dedup_key, trace_context, unique_rule,
                                 matched, concurrency_key, rate_key, expires_at, ord)
    ), ins AS (
        INSERT INTO jobs (id, tenant, use_case, job_type, payload, priority, run_at, deadline,
                          max_attempts, backoff, dedup_key, trace_context, unique_rule,
                          created_at, updated_at, concurrency_key, rate_key, expires_at)
        SELECT id, p_tenant, use_case, job_type, payload, priority, run_at, deadline,
               max_attempts, backoff, dedup_key, trace_context, unique_rule, p_now, p_now,
               concurrency_key, rate_key, expires_at
        FROM input
        WHERE matched IS NULL
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
        FROM unnest(p_ids, p_use_cases, p_dedup_keys, v_matched)
            WITH ORDINALITY AS i(id, use_case, dedup_key, matched, ord)
        LEFT JOIN LATERAL (
            (SELECT j AS job FROM jobs j WHERE j.id = i.id)
            UNION ALL
            (SELECT j AS job FROM jobs j WHERE j.id = i.matched)
            UNION ALL
            (SELECT j AS job FROM jobs j
             WHERE i.dedup_key IS NOT NULL AND j.tenant = p_tenant AND j.use_case = i.use_case
               AND j.dedup_key = i.dedup_key AND j.status IN ('pending', 'running'))
            LIMIT 1
        ) f ON true
        ORDER BY i.ord;
END
$$;
