"""Working with results: tables built from the sidecars of a dataset."""
