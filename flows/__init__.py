"""Prefect entry points for deployments (deploy/prefect.yaml). The flows themselves live in the library
(`scarmon.service.flows`); this folder only names them for `prefect deploy` and is not installed by the wheel."""
