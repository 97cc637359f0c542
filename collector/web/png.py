"""SVG -> PNG with resvg (a Rust renderer in a self-contained PyPI wheel) and the
Roboto font shipped beside this module (fonts/, Apache 2.0), so PNGs render the
same on a laptop and in the slim container image, which has no system fonts."""

from __future__ import annotations

from pathlib import Path

FONTS = Path(__file__).parent / "fonts"
FONT_FILES = [str(FONTS / "Roboto-Regular.ttf"), str(FONTS / "Roboto-Bold.ttf")]


class PngUnavailable(RuntimeError):
    """The converter cannot run here; the message says why."""


def svg_to_png(svg: str, zoom: float = 2.0) -> bytes:
    try:
        import resvg_py
    except ImportError as error:  # pragma: no cover - a dependency
        raise PngUnavailable(f"PNG rendering needs resvg-py: {error}") from error
    try:
        data = resvg_py.svg_to_bytes(
            svg_string=svg,
            zoom=zoom,
            background="#ffffff",
            font_files=FONT_FILES,
            font_family="Roboto",
            sans_serif_family="Roboto",
        )
    except ValueError as error:
        raise PngUnavailable(f"cannot render the PNG: {error}") from error
    return bytes(data)
