"""A figure's PNG rasterized from its PDF by PDFium (pypdfium2), so that each figure is drawn by matplotlib once.

Drawing is most of a figure's cost (ticks, text, legend: about 0.3-0.4 s per format on a 2-core machine), and the
PNG and the PDF are the same drawing. PDFium renders the PDF at the PNG's resolution in about a tenth of that, with
the same fonts (embedded in the PDF) and antialiasing. Where pypdfium2 is not installed, the PNG is drawn by
matplotlib's Agg as before; `RENDERER` names which one, and the figure cache counts it (a PNG of one renderer is not
kept as if it were of the other).
"""
from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
from pathlib import Path
from typing import Any

#: the PNGs' resolution (dots per inch)
DPI = 150
#: zlib level of the PNGs: level 1 writes a PNG in about a third of the time of level 6, files ~7 % larger
PNG_COMPRESSION = 1


@functools.lru_cache(maxsize=1)
def renderer() -> str:
    """What draws the PNGs: "pdfium VERSION" (from the figure's PDF) or "agg" (matplotlib, pypdfium2 missing)."""
    if importlib.util.find_spec("pypdfium2") is None:
        return "agg"
    return f"pdfium {importlib.metadata.version('pypdfium2')}"


def write_png(pdf: bytes, path: Path) -> None:
    """PATH: the one-page PDF `pdf` rendered at DPI (white where the PDF draws nothing), as a PNG."""
    import pypdfium2  # imported where it renders: a forked worker starts the library itself

    document: Any = pypdfium2.PdfDocument(pdf)
    try:
        page = document[0]
        width, height = page.get_size()  # points
        image = page.render(scale=DPI / 72).to_pil()
        # PDFium rounds a partial pixel up, matplotlib's Agg down: the same size as Agg's PNG of the figure
        image.crop((0, 0, int(width * DPI / 72), int(height * DPI / 72))).save(
            path, format="PNG", compress_level=PNG_COMPRESSION)
        page.close()
    finally:
        document.close()
