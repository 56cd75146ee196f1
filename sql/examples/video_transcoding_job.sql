-- The VideoTranscodingJob kind the demo watches: one table in the crwatch
-- custom-resource convention (docs/sql.md), keyed by
-- namespace/name. Safe to apply again and again (psql only: \ir below).
--
--     psql -v ON_ERROR_STOP=1 -f sql/examples/video_transcoding_job.sql
--
-- Applications write namespace, name, labels, annotations, spec, status and
-- deleted_at. The triggers crwatch.manage() installs own the rest: uid,
-- generation (+1 per spec change), resource_version (global sequence, on
-- every write), created_at, updated_at and txid. Whatever an UPDATE writes to
-- those is replaced, so the demo's "resource_version = resource_version + 1,
-- updated_at = now()" is redundant but harmless.
\ir ../crwatch.sql

CREATE TABLE IF NOT EXISTS public.video_transcoding_jobs (
    namespace        text        NOT NULL DEFAULT 'default',
    name             text        NOT NULL,
    uid              uuid        NOT NULL,   -- set by crwatch.tg_write
    generation       bigint      NOT NULL,   -- set by crwatch.tg_write
    resource_version bigint      NOT NULL,   -- set by crwatch.tg_write
    labels           jsonb       NOT NULL DEFAULT '{}',
    annotations      jsonb       NOT NULL DEFAULT '{}',
    spec             jsonb       NOT NULL,
    status           jsonb       NOT NULL DEFAULT '{}',
    created_at       timestamptz NOT NULL,   -- set by crwatch.tg_write
    updated_at       timestamptz NOT NULL,   -- set by crwatch.tg_write
    deleted_at       timestamptz,            -- soft delete: set it, crwatch says deletionTimestamp
    txid             xid8,                   -- set by crwatch.tg_write (the polling source reads it)
    created_txid     xid8,                   -- set by crwatch.tg_created (the polling source tells ADDED by it)
    PRIMARY KEY (namespace, name)
);

-- Triggers, the txid index; nothing if already done.
SELECT crwatch.manage('public.video_transcoding_jobs');

-- The whole old row in every UPDATE/DELETE: events carry oldObject and changed
-- without crwatch's resource cache. Costs WAL (docs/sql.md, "Replica identity").
ALTER TABLE public.video_transcoding_jobs REPLICA IDENTITY FULL;

-- Publication "crwatch" (crwatch's default publication.name).
SELECT crwatch.publish('crwatch', 'public.video_transcoding_jobs');
