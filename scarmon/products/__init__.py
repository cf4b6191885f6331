"""Products of a site: polygons, quicklooks, plots, the dashboard (`publish`) and a STAC catalog (`stac`)."""
