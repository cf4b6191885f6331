"""Ingestion, one module per step: discovery (STAC search) → scenes (group a pass's tiles) → screening (SCL over the
site) → loading (COG windows → radiometry → NDVI on the site grid) → frames (encode) → append to the sequence.
`pipeline.ingest` strings them together for one site.
"""

from scarmon.ingest.pipeline import IngestReport, ingest

__all__ = ["IngestReport", "ingest"]
