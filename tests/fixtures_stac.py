"""pytest fixture: a real STAC API (stac-fastapi-pgstac + pgstac on PostgreSQL/PostGIS) on 127.0.0.1.

Pulled into every test module by ``tests/conftest.py`` (``from tests.fixtures_stac import *``).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.stac_api import PostgresNotInstalled, StacApi, find_postgres_bindir, start_stac_api

__all__ = ["stac_api"]


@pytest.fixture(scope="session")
def stac_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StacApi]:
    """A started ``StacApi`` shared by the whole session (``.url``, ``.load_collection``, ``.load_items``).

    Skipped only when the PostgreSQL/PostGIS binaries are not installed; any other start failure is an error.
    Items are upserted and never deleted: tests that load data should use their own collection ids.
    """
    try:
        find_postgres_bindir()
    except PostgresNotInstalled as e:
        pytest.skip(f"real STAC API unavailable: {e}")
    api = start_stac_api(tmp_path_factory.mktemp("stac_api"))
    try:
        yield api
    finally:
        api.stop()
