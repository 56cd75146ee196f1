-- The VideoTranscodingJob kind the demo watches: one table in the
-- custom-resource convention (design.md §5), keyed by namespace/name.
CREATE TABLE IF NOT EXISTS public.video_transcoding_jobs (
    namespace        text        NOT NULL DEFAULT 'default',
    name             text        NOT NULL,
    uid              uuid        NOT NULL DEFAULT gen_random_uuid(),
    generation       bigint      NOT NULL DEFAULT 1,
    resource_version bigint      NOT NULL DEFAULT 1,
    labels           jsonb       NOT NULL DEFAULT '{}',
    annotations      jsonb       NOT NULL DEFAULT '{}',
    spec             jsonb       NOT NULL,
    status           jsonb       NOT NULL DEFAULT '{}',
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    deleted_at       timestamptz,
    PRIMARY KEY (namespace, name)
);
-- The whole old row in every UPDATE/DELETE: events carry oldObject and changed.
ALTER TABLE public.video_transcoding_jobs REPLICA IDENTITY FULL;
