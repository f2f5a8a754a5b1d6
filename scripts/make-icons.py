#!/usr/bin/env python3
"""Writes the PWA's PNG icons (src/web/assets/icon-*.png) from the same
shapes as icon.svg / icon-maskable.svg: a white cross on DocSpot blue.

Standard library only (zlib + struct): no ImageMagick or Pillow needed.
Run from the repository root: python3 scripts/make-icons.py
"""
import struct
import zlib
from pathlib import Path

BLUE = (0x0B, 0x5C, 0xAD)
WHITE = (0xFF, 0xFF, 0xFF)
OUT = Path(__file__).resolve().parent.parent / "src" / "web" / "assets"


def inside_rounded(x, y, x0, y0, w, h, r):
    """Is the point (x, y) inside the rounded rectangle?"""
    if not (x0 <= x <= x0 + w and y0 <= y <= y0 + h):
        return False
    cx = min(max(x, x0 + r), x0 + w - r)
    cy = min(max(y, y0 + r), y0 + h - r)
    return (x - cx) ** 2 + (y - cy) ** 2 <= r * r


def render(size, shapes, background_radius):
    """RGBA rows: 4×4 supersampling; `shapes` are in a 512-unit box."""
    s = size / 512
    n = 4
    rows = []
    for py in range(size):
        row = bytearray()
        for px in range(size):
            bg = fg = 0
            for sy in range(n):
                for sx in range(n):
                    x = (px + (sx + 0.5) / n) / s
                    y = (py + (sy + 0.5) / n) / s
                    if background_radius is None or inside_rounded(x, y, 0, 0, 512, 512, background_radius):
                        bg += 1
                        if any(inside_rounded(x, y, *r) for r in shapes):
                            fg += 1
            if bg == 0:
                row += bytes(4)
                continue
            t = fg / bg
            rgb = [round(b + (w - b) * t) for b, w in zip(BLUE, WHITE)]
            row += bytes(rgb + [round(255 * bg / (n * n))])
        rows.append(bytes(row))
    return rows


def png(size, rows):
    def chunk(kind, data):
        c = kind + data
        return struct.pack(">I", len(data)) + c + struct.pack(">I", zlib.crc32(c) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + r for r in rows)  # filter type 0 per row
    ihdr = struct.pack(">IIBBBBB", size, size, 8, 6, 0, 0, 0)  # 8-bit RGBA
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


# icon.svg: rounded square, cross of two 80-wide bars.
ANY = [(216, 112, 80, 288, 12), (112, 216, 288, 80, 12)]
# icon-maskable.svg: full bleed, the cross inside the 80 % safe zone.
MASKABLE = [(226, 146, 60, 220, 10), (146, 226, 220, 60, 10)]

for name, size, shapes, radius in [
    ("icon-192.png", 192, ANY, 96),
    ("icon-512.png", 512, ANY, 96),
    ("icon-maskable-512.png", 512, MASKABLE, None),
    # iOS rounds the corners itself and shows transparency as black.
    ("apple-touch-icon.png", 180, ANY, None),
]:
    data = png(size, render(size, shapes, radius))
    (OUT / name).write_bytes(data)
    print(f"{name}: {len(data)} bytes")
