"""Image intake with real images: the shared character art and images Pillow makes."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
from PIL import Image

from core.base.sheets import ImageLimits, ImageRejected, check_uploads, decode, prepare_image
from tests.conftest import encode


def test_transparent_rgba_sheet_becomes_rgb_on_white(neutral_png: bytes) -> None:
    source = Image.open(io.BytesIO(neutral_png)).convert("RGBA")
    assert source.getpixel((0, 0))[3] == 0  # really transparent

    prepared = prepare_image(neutral_png, "seraphina_neutral.png")

    image = decode(prepared.data)
    assert image.mode == "RGB"
    assert (prepared.width, prepared.height) == source.size
    assert image.getpixel((0, 0)) == (255, 255, 255)  # the transparent corner is white, not black
    centre = image.getpixel((source.width // 2, source.height // 3))
    assert centre != (255, 255, 255)  # the character is still there
    thumb = Image.open(io.BytesIO(prepared.thumbnail))
    assert max(thumb.size) == 256 and thumb.format == "JPEG"
    assert prepared.sha256 == hashlib.sha256(prepared.data).hexdigest()
    assert prepared.original_format == "PNG"


def test_exif_orientation_is_applied() -> None:
    img = Image.new("RGB", (40, 20), "red")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise when displayed
    prepared = prepare_image(encode(img, "JPEG", exif=exif.tobytes()), "phone.jpg")
    assert (prepared.width, prepared.height) == (20, 40)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "BMP", "GIF"])
def test_accepted_formats(fmt: str) -> None:
    prepared = prepare_image(encode(Image.new("RGB", (30, 30), (0, 128, 255)), fmt), f"x.{fmt.lower()}")
    assert decode(prepared.data).size == (30, 30)


def test_animated_gif_uses_the_first_frame() -> None:
    frames = [Image.new("RGB", (16, 16), c) for c in ("red", "blue")]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=100)
    r, _g, b = decode(prepare_image(buf.getvalue(), "anim.gif").data).getpixel((8, 8))
    assert r > 200 and b < 50


def test_palette_with_transparency_and_la_flatten_to_white() -> None:
    pal = Image.new("P", (10, 10), 0)
    pal.putpalette([0, 0, 0] * 256)
    pal.info["transparency"] = 0
    assert decode(prepare_image(encode(pal, "PNG", transparency=0), "p.png").data).getpixel((5, 5)) == (255, 255, 255)
    la = Image.new("LA", (10, 10), (0, 0))
    assert decode(prepare_image(encode(la, "PNG"), "la.png").data).getpixel((5, 5)) == (255, 255, 255)


def test_cmyk_and_16_bit_become_8_bit_rgb() -> None:
    cmyk = Image.new("CMYK", (10, 10), (0, 255, 255, 0))  # red
    r, g, b = decode(prepare_image(encode(cmyk, "JPEG"), "c.jpg").data).getpixel((5, 5))
    assert r > 200 and g < 60 and b < 60
    grey16 = Image.fromarray(np.full((10, 10), 32768, dtype=np.uint16))
    value = decode(prepare_image(encode(grey16, "PNG"), "g16.png").data).getpixel((5, 5))
    assert 120 <= value[0] <= 136  # mid grey, not clipped to white


def test_longest_side_is_capped() -> None:
    prepared = prepare_image(encode(Image.new("RGB", (3000, 1000), "white"), "PNG"), "wide.png")
    assert (prepared.width, prepared.height) == (2048, 683)


def _truncated(neutral_png: bytes) -> bytes:
    return neutral_png[: len(neutral_png) // 2]


@pytest.mark.parametrize(
    ("make", "code", "words"),
    [
        (lambda png: b"", "empty", "is empty"),
        (lambda png: b"name,colour\nSeraphina,pink\n", "not_image", "is not an image"),
        (_truncated, "corrupt", "damaged or incomplete"),
        (lambda png: png, "too_large", "the limit is 0.1 MB"),
        (lambda png: encode(Image.new("RGB", (1200, 1000)), "PNG"), "too_many_pixels", "the limit is 1 megapixels"),
        (lambda png: encode(Image.new("RGB", (8, 8)), "TIFF"), "unsupported", "TIFF"),
    ],
)
def test_bad_uploads_get_a_clear_message(neutral_png: bytes, make, code: str, words: str) -> None:
    limits = ImageLimits(max_bytes=102_400 if code == "too_large" else 20 * 2**20, max_pixels=1_000_000)
    good = encode(Image.new("RGB", (32, 32), "white"), "PNG")
    # A good main sheet plus one bad extra image: the batch has a refusal, so pages store none of it
    # (test_app.test_create_rejects_bad_uploads_and_stores_nothing checks that through the page).
    prepared, (rejected,) = check_uploads([("main.png", good), ("bad.png", make(neutral_png))], limits)
    assert [p.original_name for p in prepared] == ["main.png"]
    assert rejected.code == code
    assert words in str(rejected) and "bad.png" in str(rejected)
    assert rejected.message("zh") != str(rejected)  # translated for the Chinese UI


def test_upload_names_are_stored_harmlessly() -> None:
    png = encode(Image.new("RGB", (8, 8), "white"), "PNG")
    names = {
        "../../etc/passwd.png": "passwd.png",
        "..\\..\\windows\\win.png": "win.png",
        "red\x00\x1b[31mred.png": "red[31mred.png",  # no NUL, no terminal escape
        "\u202egnp.exe": "gnp.exe",  # no right-to-left override
        ".hidden.png": "hidden.png",
    }
    for raw, stored in names.items():
        assert prepare_image(png, raw).original_name == stored
    assert len(prepare_image(png, "x" * 500 + ".png").original_name) == 120


def test_an_svg_is_refused_by_name() -> None:
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><script>alert(2)</script></svg>'
    with pytest.raises(ImageRejected) as info:
        prepare_image(svg, "../../evil.svg")
    assert info.value.code == "not_image" and "“evil.svg” is not an image" in str(info.value)
