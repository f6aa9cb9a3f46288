-- Webhooks (jobs_server/webhooks.py, docs/webhooks.md):
--   webhook_subscriptions  a tenant's endpoints, the events each wants, its signing secret;
--   webhook_events         the outbox: one row per job event a subscription of its tenant
--                          wants, written by the trigger below in the transaction of the
--                          status change itself (an event is never lost, nor made for a change
--                          that rolled back);
--   webhook_deliveries     one row per (event, subscription): the delivery job that POSTs it
--                          (use case jobs.webhooks). Its status, attempts and errors are the
--                          job's own: the delivery log is read from the jobs.
-- The leader's WebhookFanOut turns outbox rows into delivery jobs (fan_out_webhook_events).

CREATE TABLE webhook_subscriptions (
    id          uuid PRIMARY KEY,
    tenant      text NOT NULL,
    url         text NOT NULL,
    event_types text[] NOT NULL,
    use_case    text,
    description text NOT NULL DEFAULT '',
    secret      text NOT NULL,
    paused      boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL
);
CREATE INDEX webhook_subscriptions_tenant_idx ON webhook_subscriptions (tenant, created_at, id);

CREATE TABLE webhook_events (
    seq         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id          uuid NOT NULL DEFAULT gen_random_uuid(),
    tenant      text NOT NULL,
    event_type  text NOT NULL,
    use_case    text,
    body        jsonb NOT NULL
);

CREATE TABLE webhook_deliveries (
    -- deferred: the fan-out statement writes the link before the job it names
    job_id          uuid PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE
                    DEFERRABLE INITIALLY DEFERRED,
    subscription_id uuid NOT NULL REFERENCES webhook_subscriptions (id) ON DELETE CASCADE,
    event_id        uuid NOT NULL,
    event_type      text NOT NULL,
    -- one delivery per event and subscription, whichever leader fans out, however often
    CONSTRAINT webhook_deliveries_once UNIQUE (event_id, subscription_id)
);
CREATE INDEX webhook_deliveries_log_idx ON webhook_deliveries (subscription_id, job_id DESC);

-- Statement-level, like the feasibility triggers: one pass over the statement's changed rows.
-- Without any active subscription (most deployments) it is one look at a small table; when no
-- changed row is a subscribed tenant's and in a finished state (or newly late), one scan of
-- the statement's new rows (a claim's, mostly) and nothing else. Otherwise only rows whose
-- status moved into a finished state (or whose deadline_missed turned true, set by the claim)
-- and whose tenant has a subscription that wants the event are written.
-- Statuses are compared as text: 'expired' was added to the enum by a migration that may run
-- in the same transaction as this one. The delivery jobs' own changes make no events.
CREATE FUNCTION jobs_webhook_events() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    v_tenants text[];
BEGIN
    SELECT array_agg(DISTINCT tenant) INTO v_tenants FROM webhook_subscriptions WHERE NOT paused;
    IF v_tenants IS NULL OR NOT EXISTS (
        SELECT 1 FROM new_rows
        WHERE tenant = ANY (v_tenants) AND use_case <> 'jobs.webhooks'
          AND (status::text IN ('succeeded', 'dead', 'cancelled', 'expired') OR deadline_missed)
    ) THEN
        RETURN NULL;
    END IF;
    INSERT INTO webhook_events (tenant, event_type, use_case, body)
    SELECT n.tenant, e.event_type, n.use_case,
           jsonb_build_object(
               'type', e.event_type,
               'occurred_at', to_char(n.updated_at AT TIME ZONE 'UTC',
                                      'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
               'tenant', n.tenant,
               'job_id', n.id,
               'use_case', n.use_case,
               'job_type', n.job_type,
               'status', n.status::text,
               'attempts', n.attempts)
    FROM (
        SELECT * FROM new_rows
        WHERE tenant = ANY (v_tenants) AND use_case <> 'jobs.webhooks'
          AND (status::text IN ('succeeded', 'dead', 'cancelled', 'expired') OR deadline_missed)
    ) n
    JOIN old_rows o ON o.id = n.id
    CROSS JOIN LATERAL (VALUES
        (CASE WHEN n.status::text IN ('succeeded', 'dead', 'cancelled', 'expired')
                   AND n.status::text <> o.status::text
              THEN n.status::text END),
        (CASE WHEN n.deadline_missed AND NOT o.deadline_missed THEN 'deadline_missed' END)
    ) e (event_type)
    WHERE e.event_type IS NOT NULL
      AND EXISTS (
          SELECT 1 FROM webhook_subscriptions s
          WHERE s.tenant = n.tenant AND NOT s.paused
            AND e.event_type = ANY (s.event_types)
            AND (s.use_case IS NULL OR s.use_case = n.use_case));
    RETURN NULL;
END
$$;

-- The pairing of the statement's old and new rows hashed, not looped: the planner estimates
-- one row for a transition table, and a loop is quadratic in the statement's rows (0016).
ALTER FUNCTION jobs_webhook_events() SET enable_nestloop = off;

CREATE TRIGGER jobs_webhook_events_trg AFTER UPDATE ON jobs
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION jobs_webhook_events();

-- The hook for events that are not a job's status change (batch_finished, from the batches'
-- code): call it in the transaction that decides the event, with its data (`batch_id`,
-- counts...) and when it happened (the store's clock). It writes nothing unless a subscription of the
-- tenant wants the event.
CREATE FUNCTION webhook_emit(
    p_tenant text, p_event_type text, p_use_case text, p_body jsonb, p_at timestamptz
)
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM webhook_subscriptions s
        WHERE s.tenant = p_tenant AND NOT s.paused AND p_event_type = ANY (s.event_types)
          AND (s.use_case IS NULL OR p_use_case IS NULL OR s.use_case = p_use_case)
    ) THEN
        RETURN false;
    END IF;
    INSERT INTO webhook_events (tenant, event_type, use_case, body)
    VALUES (p_tenant, p_event_type, p_use_case,
            jsonb_build_object('type', p_event_type, 'tenant', p_tenant,
                               'occurred_at', to_char(p_at AT TIME ZONE 'UTC',
                                                      'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                               'use_case', p_use_case, 'data', coalesce(p_body, '{}'::jsonb)));
    RETURN true;
END
$$;
