"""Issue 12: when one tile of a pass covers the AOI, the other tiles of the pass are not read, whatever the id order."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from shapely.geometry import box, mapping

from scarmon.demo import synthetic
from scarmon.grid import SiteGrid, site_grid
from scarmon.ingest.loading import load_scene
from scarmon.ingest.reader import RasterioReader, Window2D
from scarmon.ingest.scenes import Scene, covering_first, group_scenes
from scarmon.site import parse_site


def _item(item_id: str, geometry: Any) -> dict[str, Any]:
    return {"id": item_id, "geometry": geometry, "properties": {}, "assets": {}}


def test_covering_first_moves_covering_items_ahead_and_keeps_the_rest_in_order() -> None:
    aoi = box(10.0, 10.0, 11.0, 11.0)
    items = (
        _item("a", mapping(box(10.5, 9.0, 12.0, 12.0))),
        _item("b", None),
        _item("c", mapping(box(9.0, 9.0, 12.0, 12.0))),
        _item("d", mapping(box(9.5, 9.5, 11.5, 11.5))),
    )
    scene = Scene("S2A_20240101_R001", "2024-01-01T00:00:00Z", items)
    out = covering_first(scene, aoi)
    assert [i["id"] for i in out.items] == ["c", "d", "a", "b"]
    assert (out.id, out.datetime) == (scene.id, scene.datetime)
    assert covering_first(Scene(scene.id, scene.datetime, items[:2]), aoi).items == items[:2]


class _Recording(RasterioReader):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def read_window(self, href: str, grid: SiteGrid) -> Window2D | None:
        self.hrefs.append(href)
        return super().read_window(href, grid)


def test_only_the_covering_tile_is_read_whatever_its_place_in_id_order(tmp_path: Path) -> None:
    raw = synthetic.demo_site()
    raw["prompts"] += [dict(raw["prompts"][-1], date="2021-06-06")]  # prompt dates are clear and have both tiles
    site = parse_site(raw)
    path = synthetic.generate_catalog(tmp_path, site, start="2021-06-01", end="2021-06-06", covering_share=1.0)
    truth = json.loads((tmp_path / "truth.json").read_text())
    covering = {r["date"]: r["covering_tile"] for r in truth["acquisitions"]}
    scenes = group_scenes(json.loads(path.read_text())["features"])
    grid = site_grid(site.polygon, site.resolution_m)
    places = set()
    for scene in scenes:
        tiles = [i["properties"]["s2:mgrs_tile"] for i in scene.items]
        assert len(tiles) == 2
        places.add(tiles.index(covering[scene.date]))
        reader = _Recording()
        screening, frame = load_scene(
            scene, site.polygon, grid, reader, min_coverage=site.min_coverage, max_cloud_fraction=0.99
        )
        assert screening.accepted and frame is not None
        item = next(i for i in scene.items if i["properties"]["s2:mgrs_tile"] == covering[scene.date])
        assert sorted(reader.hrefs) == sorted(item["assets"][k]["href"] for k in ("B04", "B08", "SCL"))
        assert np.isfinite(frame.ndvi[grid.mask(site.polygon)]).mean() > 0.9
    assert places == {0, 1}  # the covering tile came first in id order on one date and second on the other
