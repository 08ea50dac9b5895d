"""Image input: what passes validation, and what each bad input is told."""

import base64
import hashlib
import io

import pytest
from PIL import Image

from langchain_llava_cot.images import (
    ImageError,
    decode_image,
    image_block,
    image_mime_type,
    read_image_bytes,
    validate_image,
)


def encoded(size=(8, 6), mode="RGB", fmt="PNG") -> bytes:
    buffer = io.BytesIO()
    Image.effect_noise(size, 64).convert(mode).save(buffer, format=fmt)
    return buffer.getvalue()


def test_a_whole_image_passes_unchanged_and_is_named_by_its_format():
    png, jpeg = encoded(), encoded(fmt="JPEG")
    assert validate_image(png) is png
    assert image_mime_type(png) == "image/png" and image_mime_type(jpeg) == "image/jpeg"
    assert image_block(jpeg) == {
        "type": "image",
        "base64": base64.b64encode(jpeg).decode(),
        "mime_type": "image/jpeg",
    }


@pytest.mark.parametrize(
    ("data", "max_pixels", "says"),
    [
        (b"not an image", 10**6, "not a readable image"),
        (encoded((64, 64))[:2000], 10**6, "truncated or corrupt"),
        (encoded((100, 100)), 9_999, "larger than the limit of 9,999 pixels"),
    ],
)
def test_bad_image_data_is_rejected_with_what_to_do(data, max_pixels, says):
    with pytest.raises(ImageError, match=says):
        validate_image(data, max_pixels=max_pixels)


def test_images_are_read_from_base64_and_data_urls():
    png = encoded()
    text = base64.b64encode(png).decode()
    assert read_image_bytes(text) == png
    assert read_image_bytes(f"data:image/png;base64,{text}") == png
    with pytest.raises(ImageError, match="must be base64"):
        read_image_bytes(f"data:image/png,{text}")
    with pytest.raises(ImageError, match="not valid base64"):
        read_image_bytes("%%%not base64%%%")


def test_urls_are_not_fetched_and_local_paths_need_permission(tmp_path):
    picture = tmp_path / "picture.png"
    picture.write_bytes(encoded())
    with pytest.raises(ImageError, match="not fetched"):
        read_image_bytes("https://example.com/a.png")
    with pytest.raises(ImageError, match="allow_local_images=True"):
        read_image_bytes(str(picture))
    assert read_image_bytes(str(picture), allow_local_paths=True) == picture.read_bytes()
    assert read_image_bytes(f"file://{picture}", allow_local_paths=True) == picture.read_bytes()
    with pytest.raises(ImageError, match="does not exist"):
        read_image_bytes(str(tmp_path / "missing.png"), allow_local_paths=True)


def test_decoding_gives_rgb_whatever_the_mode():
    for mode in ("RGBA", "L", "P"):
        picture = decode_image(encoded((5, 4), mode=mode))
        assert picture.mode == "RGB" and picture.size == (5, 4)


def test_a_pictures_key_and_base64_are_made_once_per_picture():
    from langchain_llava_cot.images import image_base64, image_key

    data = encoded()
    image_key.cache_clear()
    image_base64.cache_clear()
    for _ in range(5):  # one search asks at every stage and judge call
        assert image_key(bytes(data)) == hashlib.sha256(data).hexdigest()
        assert base64.b64decode(image_base64(bytes(data))) == data
    assert image_key.cache_info().misses == 1 and image_key.cache_info().hits == 4
    assert image_base64.cache_info().misses == 1
    assert image_key(encoded(size=(5, 5))) != image_key(data)


def test_a_transparent_background_is_read_as_white() -> None:
    import io

    from PIL import Image

    from langchain_llava_cot.images import decode_image

    picture = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    picture.putpixel((3, 3), (200, 30, 30, 255))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    decoded = decode_image(buffer.getvalue())
    assert decoded.mode == "RGB"
    assert decoded.getpixel((0, 0)) == (255, 255, 255)
    assert decoded.getpixel((3, 3)) == (200, 30, 30)


def test_the_picture_validation_decodes_is_the_one_backends_get():
    data = encoded(size=(7, 5), mode="P")
    decode_image.cache_clear()
    validate_image(data)
    assert decode_image.cache_info().misses == 1
    picture = decode_image(bytes(data))  # the same picture, arriving as another bytes object
    assert decode_image.cache_info().misses == 1 and decode_image.cache_info().hits == 1
    assert picture.mode == "RGB" and picture.size == (7, 5)
