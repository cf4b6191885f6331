"""Shared pytest fixtures. Each fixture family lives in its own module and is imported here."""

from tests.fixtures_s3 import *  # noqa: F401,F403
from tests.fixtures_stac import *  # noqa: F401,F403
