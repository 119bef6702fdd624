"""Serve plotly.js from the pinned `plotly` package as `vendor/plotly.min.js`.

The portal must work air-gapped (no CDN), and copying the 4.8 MB bundle into
the repository would let it drift from the pinned Python package; this finder
exposes just that one file to `collectstatic` and the development server.
"""

from __future__ import annotations

from pathlib import Path

import plotly
from django.contrib.staticfiles.finders import BaseFinder
from django.core.files.storage import FileSystemStorage

PLOTLY_DIR = Path(plotly.__file__).resolve().parent / "package_data"
PUBLISHED = {"vendor/plotly.min.js": "plotly.min.js"}


class PlotlyFinder(BaseFinder):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.storage = FileSystemStorage(location=str(PLOTLY_DIR))
        # collectstatic copies the file under its public name.
        self.storage.prefix = "vendor"

    def check(self, **kwargs) -> list:
        return []

    def find(self, path: str, find_all: bool = False, **kwargs):
        source = PUBLISHED.get(path)
        if source is None or not (PLOTLY_DIR / source).exists():
            return [] if find_all else None
        found = str(PLOTLY_DIR / source)
        return [found] if find_all else found

    def list(self, ignore_patterns):
        for source in PUBLISHED.values():
            if (PLOTLY_DIR / source).exists():
                yield source, self.storage
