"""SVG -> PNG with resvg (a Rust renderer in a self-contained PyPI wheel) and a
font that ships on PyPI too, so PNGs render the same on a laptop and in the
slim container image, which has no system fonts."""

from __future__ import annotations


class PngUnavailable(RuntimeError):
    """The converter cannot run here; the message says why."""


def svg_to_png(svg: str, zoom: float = 2.0) -> bytes:
    try:
        import font_roboto
        import resvg_py
    except ImportError as error:  # pragma: no cover - both are dependencies
        raise PngUnavailable(f"PNG rendering needs resvg-py and font-roboto: {error}") from error
    try:
        data = resvg_py.svg_to_bytes(
            svg_string=svg,
            zoom=zoom,
            background="#ffffff",
            font_files=[font_roboto.Roboto, font_roboto.RobotoBold],
            font_family="Roboto",
            sans_serif_family="Roboto",
        )
    except ValueError as error:
        raise PngUnavailable(f"cannot render the PNG: {error}") from error
    return bytes(data)
