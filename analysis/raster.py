"""A figure's PNG rasterized from its PDF by PDFium (pypdfium2), so that each figure is drawn by matplotlib once.

Drawing is most of a figure's cost (ticks, text, legend: about 0.3-0.4 s per format on a 2-core machine), and the
PNG and the PDF are the same drawing. PDFium renders the PDF at the PNG's resolution in about a tenth of that, with
the same fonts (embedded in the PDF) and antialiasing, at the size and DPI tag matplotlib's Agg gives. A PNG asked
for without a PDF (the report's) is drawn by Agg: drawing a PDF first would cost more. Where pypdfium2 is missing
or cannot load its library, Agg draws every PNG; `renderer()` names which one, and the figure cache counts it (a
PNG of one renderer is not kept as if it were of the other).
"""
from __future__ import annotations

import functools
import importlib.metadata
import io
from typing import Any

from PIL import Image

#: the PNGs' resolution (dots per inch)
DPI = 150
#: zlib level of the PNGs: level 1 writes a PNG in about a third of the time of level 6, files ~7 % larger
PNG_COMPRESSION = 1


@functools.lru_cache(maxsize=1)
def renderer() -> str:
    """What draws the PNGs of a figure that also has a PDF: "pdfium VERSION" (from the PDF), or "agg" (matplotlib)
    where pypdfium2 is missing or cannot load its library."""
    try:
        import pypdfium2
    except (ImportError, OSError):  # e.g. a wheel whose PDFium library does not load here
        return "agg"
    try:
        version = importlib.metadata.version("pypdfium2")
    except importlib.metadata.PackageNotFoundError:  # importable without package metadata (a vendored copy)
        version = str(getattr(pypdfium2, "__version__", "unknown"))
    return f"pdfium {version}"


def png_size(size_inches: Any) -> tuple[int, int]:
    """A figure's PNG size in pixels at DPI, as matplotlib's Agg computes it (a partial pixel dropped)."""
    width, height = size_inches
    return int(width * DPI), int(height * DPI)


def png(pdf: bytes, size: tuple[int, int]) -> bytes:
    """The one-page PDF `pdf` rendered at DPI as a PNG of `size` pixels (png_size of the figure: Agg's size,
    where PDFium rounds its single-precision page size up), tagged with its DPI."""
    import pypdfium2

    document: Any = pypdfium2.PdfDocument(pdf)
    try:
        page = document[0]
        image = page.render(scale=DPI / 72).to_pil()
        page.close()
    finally:
        document.close()
    if image.size != size:
        # PDFium's single-precision page size can round a pixel either way: cropped, or padded white as the page
        canvas = Image.new(image.mode, size, "white")
        canvas.paste(image.crop((0, 0, min(size[0], image.width), min(size[1], image.height))))
        image = canvas
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=PNG_COMPRESSION, dpi=(DPI, DPI))
    return out.getvalue()
