-- Workflows (docs/workflows.md): a job with parents waits in the status 'waiting' until every
-- parent has ended; it is never claimed (claims read status = 'pending' only). The value is
-- added here and used by no statement of this run (see 0010's note on new enum values):
-- 0018's functions name it in PL/pgSQL bodies, read only when they run, in later transactions.
ALTER TYPE job_status ADD VALUE IF NOT EXISTS 'waiting';
