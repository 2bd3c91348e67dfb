"""Working with results: tables built from a dataset's sidecars (:mod:`.table`), written as
Parquet / CSV / JSON Lines (:mod:`.export`), an HTML report (:mod:`.report`) and the mix with
clicks on its beats (:mod:`.listen`)."""
