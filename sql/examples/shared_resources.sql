-- One shared table holding many kinds: the crwatch convention plus a `kind`
-- column that is part of the key. Safe to apply again and again (psql only).
--
--     psql -v ON_ERROR_STOP=1 -f sql/examples/shared_resources.sql
--
-- crwatch maps each kind to its own resource by naming the kind column:
--
--     resource.thumb.table       = public.resources
--     resource.thumb.kind.column = kind
--     resource.thumb.kind        = ThumbnailJob
--     resource.pipe.table        = public.resources
--     resource.pipe.kind.column  = kind
--     resource.pipe.kind         = MediaPipeline
--
-- A row whose kind no resource names goes to crwatch's dead-letter
-- destination; the CHECK below stops such rows at the door instead (extend
-- it together with crwatch's configuration when a kind is added).
\ir ../crwatch.sql

CREATE TABLE IF NOT EXISTS public.resources (
    kind             text        NOT NULL
                     CONSTRAINT resources_known_kind CHECK (kind IN ('ThumbnailJob', 'MediaPipeline')),
    namespace        text        NOT NULL DEFAULT 'default',
    name             text        NOT NULL,
    uid              uuid        NOT NULL,   -- the columns marked * are set by crwatch.tg_write
    generation       bigint      NOT NULL,   -- *
    resource_version bigint      NOT NULL,   -- * one sequence for every kind and table
    labels           jsonb       NOT NULL DEFAULT '{}',
    annotations      jsonb       NOT NULL DEFAULT '{}',
    spec             jsonb       NOT NULL,
    status           jsonb       NOT NULL DEFAULT '{}',
    created_at       timestamptz NOT NULL,   -- *
    updated_at       timestamptz NOT NULL,   -- *
    deleted_at       timestamptz,
    txid             xid8,                   -- *
    created_txid     xid8,                   -- set by crwatch.tg_created
    -- Names are unique per kind and namespace, as in Kubernetes.
    PRIMARY KEY (kind, namespace, name)
);
-- Listing one kind (the informer's initial list, the polling source) uses the key's prefix.

SELECT crwatch.manage('public.resources');

-- DEFAULT identity (the primary key): UPDATEs log only the new row, so WAL
-- stays small; crwatch's resource cache supplies oldObject. Tombstones carry
-- the kind, so the polling source knows which resource a deleted row was.
SELECT crwatch.publish('crwatch', 'public.resources');
