-- Workflows and batches (docs/workflows.md).
--
-- job_edges: child waits for parent; `ended` once the parent ended (counted once, even if a
-- retry makes the parent end again). job_waits: per child, the parents not ended yet and those
-- that ended other than succeeded, its policy, and how its deadline is made on release. The
-- counter row is what makes two parents ending at once safe: each decrements it under its row
-- lock, and the one that takes it to 0 releases the child.
--
-- No statement here may use 'waiting' or 'expired' (added by 0017 and 0010, maybe in this very
-- transaction): the functions name them in PL/pgSQL, parsed when they first run.
CREATE TABLE job_edges (
    child_id  uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    parent_id uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    ended     boolean NOT NULL DEFAULT false,
    PRIMARY KEY (child_id, parent_id)
);
CREATE INDEX job_edges_parent_idx ON job_edges (parent_id);

CREATE TABLE job_waits (
    job_id            uuid PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    remaining         integer NOT NULL CHECK (remaining >= 0),
    failed            integer NOT NULL DEFAULT 0,
    on_parent_failure text NOT NULL CHECK (on_parent_failure IN ('cancel', 'run')),
    tolerance_seconds float8,  -- deadline = release + this; NULL: the absolute deadline stays
    grace_seconds     float8   -- miss policy expire: expires_at = deadline + this; NULL: late
);

-- A batch: its jobs (batch_jobs) counted as they end, under the batch row's lock; the
-- transaction that ends the last one enqueues the callback job, whose id was drawn when the
-- batch was made (a primary key: it cannot be stored twice).
CREATE TABLE batches (
    id              uuid PRIMARY KEY,
    tenant          text NOT NULL,
    total           integer NOT NULL DEFAULT 0,
    remaining       integer NOT NULL DEFAULT 0 CHECK (remaining >= 0),
    succeeded       integer NOT NULL DEFAULT 0,
    dead            integer NOT NULL DEFAULT 0,
    cancelled       integer NOT NULL DEFAULT 0,
    expired         integer NOT NULL DEFAULT 0,
    failed_ids      uuid[] NOT NULL DEFAULT '{}',
    callback        jsonb,  -- the callback job's columns (batch_callback_columns in postgres.py)
    callback_job_id uuid NOT NULL,
    created_at      timestamptz NOT NULL,
    finished_at     timestamptz
);
CREATE INDEX batches_tenant_idx ON batches (tenant, id DESC);

CREATE TABLE batch_jobs (
    job_id   uuid PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    batch_id uuid NOT NULL REFERENCES batches (id) ON DELETE CASCADE,
    ended    boolean NOT NULL DEFAULT false
);
CREATE INDEX batch_jobs_batch_idx ON batch_jobs (batch_id);

-- Waiting jobs count as active for the tenant's quota, as pending and running ones do: the
-- graph's jobs were granted at enqueue, and releasing one changes nothing.
CREATE OR REPLACE FUNCTION jobs_track_active() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    -- Each side summed per tenant, no pairing of the two (0016: a pairing loop is quadratic).
    -- Ordered by tenant so that concurrent statements lock usage rows in one order.
    FOR r IN
        SELECT tenant, sum(d) AS delta FROM (
            SELECT tenant, -count(*) AS d FROM old_rows
            WHERE status::text IN ('pending', 'running', 'waiting') GROUP BY tenant
            UNION ALL
            SELECT tenant, count(*) FROM new_rows
            WHERE status::text IN ('pending', 'running', 'waiting') GROUP BY tenant
        ) c
        GROUP BY tenant
        ORDER BY tenant
    LOOP
        IF r.delta <> 0 THEN
            UPDATE tenant_usage SET active = active + r.delta WHERE tenant = r.tenant;
        END IF;
    END LOOP;
    RETURN NULL;
END
$$;

-- What follows a job's end, in the statement that ended it: its waiting children are
-- released or cancelled, its batch counted and, at the batch's last job, the callback stored.
-- The time is the ended rows' updated_at (the statement's clock parameter).
CREATE FUNCTION jobs_follow_ends() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    r record;
    v_wait record;
    v_batch batches;
    v_release uuid[] := '{}';
    v_release_at timestamptz[] := '{}';
    v_cancel uuid[] := '{}';
    v_now timestamptz;
    v_cancelled uuid[];
    v_ids uuid[];
    v_statuses text[];
    v_ats timestamptz[];
BEGIN
    -- the rows that are ended now, read once; no statement updates an ended row and leaves it
    -- ended, and an edge or a batch member is counted once (its `ended`), so no comparison
    -- with old_rows is needed
    SELECT array_agg(n.id), array_agg(n.status::text), array_agg(n.updated_at)
    INTO v_ids, v_statuses, v_ats
    FROM new_rows n
    WHERE n.status::text IN ('succeeded', 'dead', 'cancelled', 'expired');
    IF v_ids IS NULL THEN
        RETURN NULL;  -- claims, heartbeats, retries: nothing ended
    END IF;

    -- children: one counter update per child, in id order (no deadlocks between parents);
    -- most jobs have none, which one probe of job_edges_parent_idx tells
    IF EXISTS (SELECT 1 FROM job_edges e WHERE e.parent_id = ANY (v_ids) AND NOT e.ended) THEN
    FOR r IN
        WITH ended AS (
            SELECT * FROM unnest(v_ids, v_statuses, v_ats) AS x(id, status, updated_at)
        ), marked AS (
            UPDATE job_edges e SET ended = true
            FROM ended x
            WHERE e.parent_id = x.id AND NOT e.ended
            RETURNING e.child_id, x.status, x.updated_at
        )
        SELECT child_id, count(*)::integer AS n,
               (count(*) FILTER (WHERE status <> 'succeeded'))::integer AS f,
               max(updated_at) AS at
        FROM marked GROUP BY child_id ORDER BY child_id
    LOOP
        UPDATE job_waits SET remaining = remaining - r.n, failed = failed + r.f
        WHERE job_id = r.child_id
        RETURNING remaining, failed, on_parent_failure INTO v_wait;
        IF NOT FOUND THEN
            CONTINUE;
        END IF;
        IF v_wait.failed > 0 AND v_wait.on_parent_failure = 'cancel' THEN
            v_cancel := v_cancel || r.child_id;
            v_now := greatest(v_now, r.at);
        ELSIF v_wait.remaining = 0 THEN
            v_release := v_release || r.child_id;
            v_release_at := v_release_at || r.at;
        END IF;
    END LOOP;
    END IF;

    IF cardinality(v_release) > 0 THEN
        UPDATE jobs j SET
            status = 'pending',
            run_at = greatest(j.run_at, x.at),
            deadline = CASE WHEN w.tolerance_seconds IS NULL THEN j.deadline
                            ELSE least(greatest(j.run_at, x.at)
                                       + w.tolerance_seconds * interval '1 second',
                                       '9999-01-01T00:00:00Z'::timestamptz) END,
            expires_at = CASE WHEN w.tolerance_seconds IS NULL THEN j.expires_at
                              WHEN w.grace_seconds IS NULL THEN NULL
                              ELSE least(greatest(j.run_at, x.at)
                                         + (w.tolerance_seconds + w.grace_seconds)
                                           * interval '1 second',
                                         '9999-01-01T00:00:00Z'::timestamptz) END,
            updated_at = x.at
        FROM unnest(v_release, v_release_at) AS x(id, at)
        JOIN job_waits w ON w.job_id = x.id
        WHERE j.id = x.id AND j.status::text = 'waiting';
    END IF;

    IF cardinality(v_cancel) > 0 THEN
        -- the children and every waiting descendant that cancels too, in one statement (a
        -- trigger per generation would nest as deep as the graph)
        WITH RECURSIVE doomed AS (
            SELECT unnest(v_cancel) AS id
            UNION
            SELECT e.child_id FROM doomed d
            JOIN job_edges e ON e.parent_id = d.id
            JOIN job_waits w ON w.job_id = e.child_id AND w.on_parent_failure = 'cancel'
        ), done AS (
            UPDATE jobs j SET
                status = 'cancelled',
                finished_at = v_now,
                updated_at = v_now,
                last_error = 'cancelled: a job it depends on ended without succeeding '
                             '(on_parent_failure cancel)'
            WHERE j.id IN (SELECT id FROM doomed) AND j.status::text = 'waiting'
            RETURNING j.id
        )
        SELECT array_agg(id) INTO v_cancelled FROM done;
    END IF;

    -- Children released or cancelled here change no row the caller's service knows of, so
    -- this transaction tells the event streams (jobs_server.events, channel jobs_events: hex
    -- ids, comma-separated, 200 a payload) and, for released ones, the scheduler (a pass over
    -- every use case). Only ends that have waiting children notify inside their transaction;
    -- no other statement does (NOTIFY takes a global lock at commit).
    IF cardinality(v_release) > 0 OR v_cancelled IS NOT NULL THEN
        PERFORM jobs_notify_ids(v_release || coalesce(v_cancelled, '{}'));
    END IF;
    IF cardinality(v_release) > 0 THEN
        PERFORM pg_notify('jobs_wakeup', '{"u": []}');
    END IF;

    -- batches: one counter update per batch, in id order (most jobs are in none)
    IF EXISTS (SELECT 1 FROM batch_jobs m WHERE m.job_id = ANY (v_ids) AND NOT m.ended) THEN
    FOR r IN
        WITH ended AS (
            SELECT * FROM unnest(v_ids, v_statuses, v_ats) AS x(id, status, updated_at)
        ), marked AS (
            UPDATE batch_jobs m SET ended = true
            FROM ended x
            WHERE m.job_id = x.id AND NOT m.ended
            RETURNING m.batch_id, x.id, x.status, x.updated_at
        )
        SELECT batch_id, count(*)::integer AS n,
               (count(*) FILTER (WHERE status = 'succeeded'))::integer AS succeeded,
               (count(*) FILTER (WHERE status = 'dead'))::integer AS dead,
               (count(*) FILTER (WHERE status = 'cancelled'))::integer AS cancelled,
               (count(*) FILTER (WHERE status = 'expired'))::integer AS expired,
               coalesce(array_agg(id ORDER BY id) FILTER (WHERE status <> 'succeeded'), '{}')
                   AS failed,
               max(updated_at) AS at
        FROM marked GROUP BY batch_id ORDER BY batch_id
    LOOP
        UPDATE batches SET
            remaining = remaining - r.n,
            succeeded = succeeded + r.succeeded,
            dead = dead + r.dead,
            cancelled = cancelled + r.cancelled,
            expired = expired + r.expired,
            failed_ids = (failed_ids || r.failed)[1:1000],
            finished_at = CASE WHEN remaining - r.n = 0 THEN r.at END
        WHERE id = r.batch_id
        RETURNING * INTO v_batch;
        IF FOUND AND v_batch.remaining = 0 THEN
            IF v_batch.callback IS NOT NULL THEN
                PERFORM jobs_batch_callback(v_batch, r.at);
            END IF;
            -- the webhook event batch_finished (webhook_emit, migration 0020: written only
            -- when a subscription of the tenant wants it)
            PERFORM webhook_emit(v_batch.tenant, 'batch_finished', NULL, jsonb_build_object(
                'batch_id', v_batch.id,
                'counts', jsonb_build_object('succeeded', v_batch.succeeded,
                                             'dead', v_batch.dead,
                                             'cancelled', v_batch.cancelled,
                                             'expired', v_batch.expired),
                'failed_job_ids', to_jsonb(v_batch.failed_ids),
                'callback_job_id', CASE WHEN v_batch.callback IS NOT NULL
                                        THEN v_batch.callback_job_id END), r.at);
        END IF;
    END LOOP;
    END IF;
    RETURN NULL;
END
$$;

-- The ids as NOTIFYs on jobs_events (jobs_server.events.chunks: hex ids, comma-separated,
-- under the 8000-byte limit of a payload).
CREATE FUNCTION jobs_notify_ids(p_ids uuid[]) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    i integer := 1;
BEGIN
    WHILE i <= coalesce(cardinality(p_ids), 0) LOOP
        PERFORM pg_notify('jobs_events', array_to_string(ARRAY(
            SELECT replace(x::text, '-', '') FROM unnest(p_ids[i:i + 199]) AS x), ','));
        i := i + 200;
    END LOOP;
END
$$;

-- The callback of a batch that just finished, through jobs_enqueue (quota: none, the batch's
-- jobs were granted already). Its payload is the callback's own plus "batch".
CREATE FUNCTION jobs_batch_callback(b batches, p_now timestamptz) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    c jsonb := b.callback;
    v_deadline timestamptz := least(p_now + (c->>'tolerance_seconds')::float8
                                    * interval '1 second', '9999-01-01T00:00:00Z');
    v_outcome text;
BEGIN
    SELECT e.outcome INTO v_outcome FROM jobs_enqueue(
        b.tenant, NULL, ARRAY[b.callback_job_id], ARRAY[c->>'use_case'],
        ARRAY[c->>'job_type'],
        ARRAY[coalesce(c->'payload', '{}') || jsonb_build_object('batch', jsonb_build_object(
            'id', b.id,
            'counts', jsonb_build_object('succeeded', b.succeeded, 'dead', b.dead,
                                         'cancelled', b.cancelled, 'expired', b.expired),
            'failed_job_ids', to_jsonb(b.failed_ids),
            'failed_truncated', b.dead + b.cancelled + b.expired > cardinality(b.failed_ids)))],
        ARRAY[(c->>'priority')::integer], ARRAY[p_now], ARRAY[v_deadline],
        ARRAY[(c->>'max_attempts')::integer], ARRAY[c->'backoff'], ARRAY[NULL::text],
        ARRAY[NULL::jsonb], ARRAY[NULL::jsonb], p_now, ARRAY[c->>'concurrency_key'],
        ARRAY[c->>'rate_key'],
        ARRAY[CASE WHEN c->>'grace_seconds' IS NULL THEN NULL
                   ELSE least(v_deadline + (c->>'grace_seconds')::float8 * interval '1 second',
                              '9999-01-01T00:00:00Z') END]) e;
    -- the feasibility summary's delta for the pending job stored, as the enqueue statements
    -- write theirs (migration 0022: no insert trigger)
    IF v_outcome = 'created' AND current_setting('jobs.feasibility', true) IS DISTINCT FROM 'off'
    THEN
        INSERT INTO feasibility_pending_deltas (use_case, priority, bucket, n)
        VALUES (c->>'use_case', (c->>'priority')::integer, jobs_deadline_second(v_deadline), 1);
    END IF;
END
$$;

CREATE TRIGGER jobs_follow_ends_trg AFTER UPDATE ON jobs
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION jobs_follow_ends();

-- Link a request's children to their parents, in the transaction that stored them (pending,
-- by jobs_enqueue). The parents are locked FOR SHARE first, in id order: one that ends
-- meanwhile waits for this commit, and its trigger then sees the edges. Answers the parents
-- that are not the tenant's jobs (unknown, or another tenant's), linking nothing then.
-- A child whose parents all ended already stays pending (or is cancelled: a parent failed and
-- it cancels); the others wait.
CREATE FUNCTION jobs_link(
    p_tenant text, p_now timestamptz,
    p_children uuid[], p_policies text[], p_tolerances float8[], p_graces float8[],
    p_edge_children uuid[], p_edge_parents uuid[]
) RETURNS SETOF uuid LANGUAGE plpgsql AS $$
DECLARE
    v_missing uuid[];
BEGIN
    PERFORM 1 FROM jobs j
    WHERE j.id = ANY (p_edge_parents) AND j.tenant = p_tenant
    ORDER BY j.id FOR SHARE;
    SELECT array_agg(DISTINCT p.id) INTO v_missing
    FROM unnest(p_edge_parents) AS p(id)
    WHERE NOT EXISTS (SELECT 1 FROM jobs j WHERE j.id = p.id AND j.tenant = p_tenant);
    IF v_missing IS NOT NULL THEN
        RETURN QUERY SELECT unnest(v_missing);
        RETURN;
    END IF;

    INSERT INTO job_edges (child_id, parent_id, ended)
    SELECT e.child_id, e.parent_id,
           j.status::text IN ('succeeded', 'dead', 'cancelled', 'expired')
    FROM unnest(p_edge_children, p_edge_parents) AS e(child_id, parent_id)
    JOIN jobs j ON j.id = e.parent_id;

    INSERT INTO job_waits (job_id, remaining, failed, on_parent_failure, tolerance_seconds,
                           grace_seconds)
    SELECT c.id, count(*) FILTER (WHERE NOT e.ended),
           count(*) FILTER (WHERE e.ended AND j.status::text <> 'succeeded'),
           c.policy, c.tolerance, c.grace
    FROM unnest(p_children, p_policies, p_tolerances, p_graces) AS c(id, policy, tolerance, grace)
    JOIN job_edges e ON e.child_id = c.id
    JOIN jobs j ON j.id = e.parent_id
    GROUP BY c.id, c.policy, c.tolerance, c.grace;

    UPDATE jobs j SET status = 'waiting'
    FROM job_waits w
    WHERE w.job_id = j.id AND j.id = ANY (p_children) AND w.remaining > 0
      AND NOT (w.failed > 0 AND w.on_parent_failure = 'cancel');

    -- a parent failed already: cancelled now; the trigger cancels its waiting descendants
    UPDATE jobs j SET
        status = 'cancelled', finished_at = p_now, updated_at = p_now,
        last_error = 'cancelled: a job it depends on ended without succeeding '
                     '(on_parent_failure cancel)'
    FROM job_waits w
    WHERE w.job_id = j.id AND j.id = ANY (p_children)
      AND w.failed > 0 AND w.on_parent_failure = 'cancel';
END
$$;
