-- When the current holder of each leader lease took it (a renewal keeps it, a takeover sets
-- it): the dashboard shows it, and a failover can be read off the database's own times.
ALTER TABLE scheduler_leader ADD COLUMN leader_since timestamptz;
