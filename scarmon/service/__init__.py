"""The monitoring service: the one stage runner (`runner`) and its Prefect face (`flows`, `dask`)."""
