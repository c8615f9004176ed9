"""service: the top floor — CLI, scheduler and wiring, pipeline, read-side queries, backfill,
demo. Nothing below imports it."""
