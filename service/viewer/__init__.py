"""A static browser viewer for the API: ``GET /viewer`` (HTML + one JS + one CSS, no build).

The page posts the chosen image to ``/v1/report`` and ``/v1/ground`` from the browser (with
the API key typed into it) and overlays the returned heatmaps and boxes.
"""

from .routes import router

__all__ = ["router"]
