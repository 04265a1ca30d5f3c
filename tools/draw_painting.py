"""Draw samples/paintings/shapes.jpg: an abstract "painting" made here, so that a fresh clone has a painting to try
`styler stylize --style-image` with (the paintings in ../shared are not bundled). Seeded: the same file each time.

    .venv/bin/python tools/draw_painting.py [OUT]

Colour fields, rings, bars and triangles in the manner of early abstract painting, then a few thousand short
strokes that follow a smooth flow field, so the picture has a brushed texture for a style to carry.
"""

from __future__ import annotations

import math
import random
import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

SIZE = (640, 480)
PALETTE = [(214, 64, 52), (242, 186, 62), (38, 84, 160), (28, 28, 36), (236, 228, 206), (64, 148, 108), (196, 96, 150)]


def draw(seed: int = 7) -> Image.Image:
    rng = random.Random(seed)
    image = Image.new("RGB", SIZE, (226, 206, 160))
    pen = ImageDraw.Draw(image)
    width, height = SIZE
    for _ in range(7):  # colour fields
        x, y = rng.uniform(-100, width), rng.uniform(-100, height)
        w, h = rng.uniform(120, 320), rng.uniform(90, 260)
        pen.polygon([(x, y), (x + w, y + rng.uniform(-40, 40)), (x + w, y + h), (x, y + h)], fill=rng.choice(PALETTE))
    for _ in range(6):  # rings
        x, y, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(25, 90)
        for k, fraction in enumerate((1.0, 0.7, 0.4)):
            s = r * fraction
            pen.ellipse([x - s, y - s, x + s, y + s], fill=PALETTE[(k + rng.randrange(7)) % 7])
    for _ in range(9):  # bars
        x, y, angle = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(0, math.pi)
        length = rng.uniform(120, 400)
        end = (x + length * math.cos(angle), y + length * math.sin(angle))
        pen.line([(x, y), end], fill=rng.choice(PALETTE), width=rng.randrange(4, 16))
    for _ in range(5):  # triangles
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        points = [(x + rng.uniform(-110, 110), y + rng.uniform(-110, 110)) for _ in range(3)]
        pen.polygon(points, fill=rng.choice(PALETTE), outline=PALETTE[3])
    image = image.filter(ImageFilter.GaussianBlur(1.2))
    base = image.copy()
    pen = ImageDraw.Draw(image)
    for _ in range(6000):  # brush strokes along a smooth flow field, in the colour beneath them
        x, y = rng.uniform(0, width - 1), rng.uniform(0, height - 1)
        angle = math.sin(x / 90) + math.cos(y / 70) + rng.gauss(0, 0.2)
        length = rng.uniform(6, 16)
        end = (x + length * math.cos(angle), y + length * math.sin(angle))
        r, g, b = base.getpixel((int(x), int(y)))  # type: ignore[misc]
        shade = rng.uniform(0.82, 1.15)
        colour = tuple(max(0, min(255, round(c * shade))) for c in (r, g, b))
        pen.line([(x, y), end], fill=colour, width=rng.randrange(2, 5))
    return image


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else Path(__file__).resolve().parent.parent / "samples" / "paintings" / "shapes.jpg"
    out.parent.mkdir(parents=True, exist_ok=True)
    draw().save(out, quality=92)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
