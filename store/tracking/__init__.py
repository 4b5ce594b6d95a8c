"""What runs log, in the database: one module per concern.

- ``writes``: tracking batches from the ingest consumer into the tables (``apply_batch``)
- ``values``: how a logged value is stored so it reads back exactly as logged
- ``rollups``: per-span summaries of each series, kept as points arrive
- ``reads``: tags, properties, series, latest values, and downsampled history

Which runs a run may write to (its tree) is ``store.run_tree``.
"""
