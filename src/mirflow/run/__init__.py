"""Running analyzers over a dataset: the plan (what is due and why), the worker (analyzers applied
to the tracks of one work unit) and the coordinator (leases, dispatch to an executor, sidecar
merges, summaries)."""
