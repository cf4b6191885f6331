"""Scar tracking through a site's frame sequence (SAM 2 video engine, knowledge tracker)."""
