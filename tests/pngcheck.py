"""Is a PNG more than a blank page? Decodes it with the standard library only."""

from __future__ import annotations

import struct
import zlib
from collections import Counter


def png_size_and_colours(png: bytes) -> tuple[int, int, int]:
    """(width, height, distinct colours in a sample of rows) of an 8-bit RGB/RGBA PNG."""
    if png[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    offset, width, height, colour_type, data = 8, 0, 0, 0, b""
    while offset < len(png):
        length, kind = struct.unpack(">I4s", png[offset : offset + 8])
        chunk = png[offset + 8 : offset + 8 + length]
        offset += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour_type = struct.unpack(">IIBB", chunk[:10])
            if depth != 8 or colour_type not in (2, 6):
                raise ValueError(f"unsupported PNG (depth {depth}, colour type {colour_type})")
        elif kind == b"IDAT":
            data += chunk
        elif kind == b"IEND":
            break
    bpp = 3 if colour_type == 2 else 4
    raw = zlib.decompress(data)
    stride = width * bpp
    previous = bytearray(stride)
    colours: Counter[bytes] = Counter()
    position = 0
    for row in range(height):
        kind = raw[position]
        line = bytearray(raw[position + 1 : position + 1 + stride])
        position += 1 + stride
        for i in range(stride):  # undo the PNG filter of this row
            left = line[i - bpp] if i >= bpp else 0
            up = previous[i]
            corner = previous[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                pred = left if pa <= pb and pa <= pc else (up if pb <= pc else corner)
                line[i] = (line[i] + pred) & 0xFF
        previous = line
        if row % 7 == 0:
            for x in range(0, stride, bpp * 3):
                colours[bytes(line[x : x + 3])] += 1
    return width, height, len(colours)


def assert_not_blank(png: bytes, min_colours: int = 8) -> None:
    width, height, colours = png_size_and_colours(png)
    assert width > 100 and height > 100, (width, height)
    assert colours >= min_colours, f"looks blank: {colours} colours in {width}x{height}"
