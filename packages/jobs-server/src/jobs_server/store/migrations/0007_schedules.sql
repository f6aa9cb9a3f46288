-- Periodic jobs. A schedule's next tick is the guard of exactly one job per tick: the job is
-- stored in the transaction that moves next_run_at from the tick it read (compare-and-set), so
-- a second scheduler, a restart or a crash between the two can neither double nor lose one.
CREATE TABLE schedules (
    tenant                  text NOT NULL,
    name                    text NOT NULL,
    source                  text NOT NULL CHECK (source IN ('config', 'api')),
    cron                    text,
    interval_seconds        integer CHECK (interval_seconds > 0),
    timezone                text NOT NULL,
    use_case                text NOT NULL,
    job_type                text NOT NULL,
    payload                 jsonb NOT NULL,
    delay_tolerance_seconds double precision,
    priority                integer NOT NULL,
    missed                  text NOT NULL CHECK (missed IN ('skip', 'run_once')),
    dedup_key               text,
    paused                  boolean NOT NULL DEFAULT false,
    anchor_at               timestamptz NOT NULL,
    next_run_at             timestamptz NOT NULL,
    last_run_at             timestamptz,
    created_at              timestamptz NOT NULL,
    PRIMARY KEY (tenant, name),
    CHECK ((cron IS NULL) <> (interval_seconds IS NULL))
);

CREATE INDEX schedules_due ON schedules (next_run_at) WHERE NOT paused;
