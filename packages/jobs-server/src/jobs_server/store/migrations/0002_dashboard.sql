-- What the dashboard reads. Counting over the jobs table on every page view would grow with it,
-- so the scheduler leader keeps small tables up to date instead (jobs_server/stats.py):
--   job_counts        a snapshot of active jobs per tenant and use case, replaced every few
--                     seconds by one GROUP BY over the pending and running rows;
--   job_stats_minute  a per-minute rollup: dispatches and their deadline slack (added by the
--                     scheduler from the jobs it published) and finished jobs (counted from
--                     jobs_finished_idx past a watermark);
--   scheduler_status  the leader's last pass and the rollup's watermark.
-- No trigger: the enqueue, claim and outcome statements stay as they were.

CREATE TABLE job_counts (
    tenant                text NOT NULL,
    use_case              text NOT NULL,
    pending               bigint NOT NULL,
    due                   bigint NOT NULL,   -- pending with run_at <= now
    overdue               bigint NOT NULL,   -- pending past their deadline
    running               bigint NOT NULL,
    oldest_due_run_at     timestamptz,
    earliest_due_deadline timestamptz,
    PRIMARY KEY (tenant, use_case)
);

CREATE TABLE job_stats_minute (
    minute     timestamptz NOT NULL,
    use_case   text NOT NULL,
    tenant     text NOT NULL,
    dispatched integer NOT NULL DEFAULT 0,
    missed     integer NOT NULL DEFAULT 0,   -- dispatched after their deadline
    slack_sum  double precision NOT NULL DEFAULT 0,   -- seconds of deadline - dispatch
    slack_min  double precision,
    slack_max  double precision,
    succeeded  integer NOT NULL DEFAULT 0,
    dead       integer NOT NULL DEFAULT 0,
    cancelled  integer NOT NULL DEFAULT 0,
    PRIMARY KEY (minute, use_case, tenant)
);

CREATE TABLE scheduler_status (
    name              text PRIMARY KEY,
    holder            text,
    epoch             bigint,
    last_pass_at      timestamptz,
    last_pass_seconds double precision,
    passes            bigint NOT NULL DEFAULT 0,
    dispatched        bigint NOT NULL DEFAULT 0,
    counts_at         timestamptz,   -- when job_counts was last replaced
    finished_through  timestamptz,   -- jobs finished before this are in job_stats_minute
    updated_at        timestamptz NOT NULL DEFAULT now()
);

-- The deadline an attempt ran under, kept when an operator's retry gives the job a new one
-- (null: the job's current deadline), so that each attempt's slack stays true.
ALTER TABLE job_attempts ADD COLUMN deadline timestamptz;

-- The job list across tenants filtered to dead or cancelled jobs (what operators look for),
-- newest first. Partial: enqueue, dispatch and success never write to it.
CREATE INDEX jobs_failed_list_idx ON jobs (status, id DESC) WHERE status IN ('dead', 'cancelled');
-- Search by dedup key, also among finished jobs (jobs_dedup_idx holds active ones only).
-- Partial: jobs without a dedup key never write to it.
CREATE INDEX jobs_dedup_search_idx ON jobs (dedup_key, tenant) WHERE dedup_key IS NOT NULL;
