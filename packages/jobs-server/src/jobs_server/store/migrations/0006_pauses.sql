-- Paused queues: a use case (tenant ''), a tenant in every use case (use_case ''), or one tenant
-- within one use case. One row per scope ever paused holds its state and the last change (who,
-- when by the store's clock, why); pause_history keeps every change. The dispatcher reads the
-- paused rows once per pass.
CREATE TABLE pauses (
    use_case   text NOT NULL,
    tenant     text NOT NULL,
    paused     boolean NOT NULL,
    changed_by text NOT NULL,
    changed_at timestamptz NOT NULL,
    reason     text,
    PRIMARY KEY (use_case, tenant),
    CHECK (use_case <> '' OR tenant <> '')
);

CREATE TABLE pause_history (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    use_case   text NOT NULL,
    tenant     text NOT NULL,
    paused     boolean NOT NULL,
    changed_by text NOT NULL,
    changed_at timestamptz NOT NULL,
    reason     text
);
