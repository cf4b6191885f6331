"""The synthetic catalog's `covering_share`: on that share of the passes one tile covers the whole AOI (issue 12's
redundant second tile); by default every tile's data edge cuts through the AOI."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from rasterio.warp import transform_geom
from rasterio.windows import from_bounds
from shapely.geometry import mapping, shape

from scarmon.demo import synthetic
from scarmon.site import parse_site

START, END = "2021-06-01", "2021-07-26"  # acquisitions k = 0 .. 11


def _generate(out: Path, share: float) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    path = synthetic.generate_catalog(out, synthetic.demo_site(), start=START, end=END, covering_share=share)
    return json.loads(path.read_text())["features"], json.loads((out / "truth.json").read_text())


def _covers(item: dict[str, Any], aoi: Any) -> bool:
    return bool(shape(item["geometry"]).contains(aoi))


def _scl_has_data_over_aoi(item: dict[str, Any], aoi: Any) -> bool:
    """Every SCL pixel in the AOI's bounding box (in the tile's CRS) holds data."""
    href = item["assets"]["SCL"]["href"]
    with rasterio.open(href) as src:
        bounds = shape(transform_geom("EPSG:4326", src.crs, mapping(aoi))).bounds
        win = from_bounds(*bounds, transform=src.transform).round_offsets().round_lengths()
        return bool((src.read(1, window=win) != 0).all())


@pytest.mark.parametrize("share", [0.3, 0.5, 1.0])
def test_covering_tile_spreads_the_share_evenly_and_alternates(share: float) -> None:
    picks = [synthetic.covering_tile(k, share) for k in range(200)]
    for start in range(0, 150, 7):
        for n in (10, 20, 50):
            count = sum(p is not None for p in picks[start : start + n])
            assert abs(count - n * share) <= 1
    chosen = [p for p in picks if p is not None]
    assert set(chosen) == {0, 1} and all(a != b for a, b in zip(chosen, chosen[1:], strict=False))
    assert all(synthetic.covering_tile(k, 0.0) is None for k in range(200))


def test_covering_share_outside_0_1_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="covering_share"):
        synthetic.generate_catalog(tmp_path, synthetic.demo_site(), start=START, end=START, covering_share=1.5)


def test_one_tile_covers_the_aoi_on_the_intended_share_of_passes(tmp_path: Path) -> None:
    aoi = parse_site(synthetic.demo_site()).polygon
    items, truth = _generate(tmp_path, 0.5)
    records = truth["acquisitions"]
    by_id = {it["id"]: it for it in items}
    assert len(records) == 12
    covering_dates = [r for r in records if r["covering_tile"] is not None]
    assert len(covering_dates) == 6
    assert {r["covering_tile"] for r in covering_dates} == {t["mgrs"] for t in truth["tiles"]}
    for rec in records:
        its = [by_id[i] for i in rec["items"]]
        covering = [it for it in its if _covers(it, aoi)]
        if rec["covering_tile"] is None or rec["missing_tile"] == rec["covering_tile"]:
            assert covering == []
            continue
        assert [it["properties"]["s2:mgrs_tile"] for it in covering] == [rec["covering_tile"]]
        assert _scl_has_data_over_aoi(covering[0], aoi)
        others = [it for it in its if it is not covering[0]]
        for it in others:  # the other tile of the pass still covers only part of the AOI: it is redundant
            share = shape(it["geometry"]).intersection(aoi).area / aoi.area
            assert 0.7 < share < 0.85 and not _scl_has_data_over_aoi(it, aoi)


def test_by_default_every_tile_cuts_through_the_aoi(tmp_path: Path) -> None:
    aoi = parse_site(synthetic.demo_site()).polygon
    items, truth = _generate(tmp_path, 0.0)
    records = truth["acquisitions"]
    shares = np.array([shape(it["geometry"]).intersection(aoi).area / aoi.area for it in items])
    assert len(items) >= 20 and ((shares > 0.7) & (shares < 0.85)).all()
    assert all("covering_tile" not in r for r in records)
    per_date: dict[str, int] = defaultdict(int)
    for it in items:
        per_date[it["properties"]["datetime"][:10]] += 1
    assert len(per_date) == 12 and set(per_date.values()) <= {1, 2}
