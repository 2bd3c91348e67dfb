"""The ground floor: decoding and the shared per-track context, dataset layout, sidecars, leases,
atomic file writes, the exception family and configuration. Imports nothing above it."""
