"""Display sizes: GET /v1/images/{id}?w=WIDTH, resampled on the server, cached and immutable
like the originals, which never change."""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.image_sizes import DISPLAY_WIDTHS, resample

STATIC = Path(__file__).resolve().parents[2] / "app" / "static"
BAD_WIDTHS = ["100", "0", "-128", "2048", "512.5", "abc", ""]


def served_image(client: TestClient) -> tuple[int, str]:
    response = client.post("/v1/impressions", json={"placement": "background"})
    assert response.status_code == 201, response.text
    served = response.json()
    return served["image_id"], served["image_url"]


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def test_every_width_is_resampled_to_its_size(client: TestClient) -> None:
    _, url = served_image(client)
    original = client.get(url)
    original_size = decode(original.content).size
    etags = {original.headers["etag"]}
    for width in DISPLAY_WIDTHS:
        response = client.get(url, params={"w": width})
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "image/webp"
        assert response.headers["cache-control"] == original.headers["cache-control"]
        assert "immutable" in response.headers["cache-control"]
        image = decode(response.content)
        assert image.format == "WEBP"
        assert image.size == (width, round(original_size[1] * width / original_size[0]))
        etags.add(response.headers["etag"])
    # One ETag per width, none equal to the original's: a cache never mixes them up.
    assert len(etags) == len(DISPLAY_WIDTHS) + 1


def test_etag_depends_on_the_content_hash_and_the_width(client: TestClient) -> None:
    _, url = served_image(client)
    original_etag = client.get(url).headers["etag"]
    content_hash = original_etag.strip('"')
    assert client.get(url, params={"w": 512}).headers["etag"] == f'"{content_hash}-w512"'
    # Another image at the same width has another ETag.
    for _ in range(5):
        _, other_url = served_image(client)
        if other_url != url:
            break
    assert other_url != url
    assert (
        client.get(other_url, params={"w": 512}).headers["etag"]
        != client.get(url, params={"w": 512}).headers["etag"]
    )


def test_if_none_match_gives_not_modified_per_width(client: TestClient) -> None:
    _, url = served_image(client)
    first = client.get(url, params={"w": 256})
    etag = first.headers["etag"]
    again = client.get(url, params={"w": 256}, headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == etag
    assert "immutable" in again.headers["cache-control"]
    # That ETag names the 256 px image only: another width or the original is sent in full.
    other = client.get(url, params={"w": 1024}, headers={"If-None-Match": etag})
    assert other.status_code == 200
    assert decode(other.content).width == 1024
    assert client.get(url, headers={"If-None-Match": etag}).status_code == 200


@pytest.mark.parametrize("width", BAD_WIDTHS)
def test_a_width_outside_the_set_is_a_422_naming_the_allowed_values(
    client: TestClient, width: str
) -> None:
    _, url = served_image(client)
    response = client.get(url, params={"w": width})
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "validation_error"
    assert "query.w" in body["message"]
    assert ", ".join(str(w) for w in DISPLAY_WIDTHS) in body["message"]


def test_a_bad_width_is_refused_before_the_image_is_looked_up(client: TestClient) -> None:
    assert client.get("/v1/images/999999", params={"w": 512}).status_code == 404
    assert client.get("/v1/images/999999", params={"w": 500}).status_code == 422


def test_originals_never_change(client: TestClient) -> None:
    image_id, url = served_image(client)
    before = client.get(url)
    assert before.headers["content-type"] == "image/png"
    content_hash = before.headers["etag"].strip('"')
    assert hashlib.sha256(before.content).hexdigest() == content_hash
    for width in DISPLAY_WIDTHS:
        assert client.get(url, params={"w": width}).status_code == 200
    after = client.get(url)
    assert after.content == before.content
    assert after.headers["etag"] == before.headers["etag"]
    # The stored row (what the estimator learns from) is the same bytes.
    from app import queries

    with client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        row = queries.get_image(session, image_id)
        assert row is not None
        assert bytes(row.png) == before.content
        assert row.content_hash == content_hash


def test_display_sizes_are_cached_apart_from_the_originals(client: TestClient) -> None:
    image_id, url = served_image(client)
    first = client.get(url, params={"w": 1920})
    state = client.app.state  # type: ignore[attr-defined]
    cached = state.display_cache.get((image_id, 1920))
    assert cached is not None
    assert cached.content == first.content
    assert state.image_cache.get(image_id).media_type == "image/png"
    assert client.get(url, params={"w": 1920}).content == first.content


def test_the_script_free_embed_redirects_to_the_display_size(client: TestClient) -> None:
    response = client.get(
        "/v1/embed/image", params={"placement": "background", "w": 256}, follow_redirects=False
    )
    assert response.status_code == 303
    assert re.fullmatch(r"/v1/images/\d+\?w=256", response.headers["location"])
    assert (
        client.get("/v1/embed/image", params={"w": 300}, follow_redirects=False).status_code == 422
    )


def test_openapi_documents_the_width() -> None:
    from app.main import create_app

    spec = create_app().openapi()
    parameters = spec["paths"]["/v1/images/{image_id}"]["get"]["parameters"]
    (width,) = [p for p in parameters if p["name"] == "w"]
    assert width["in"] == "query"
    assert width["required"] is False
    assert "1920" in width["description"]
    assert "422" in width["description"]
    schema_text = str(width["schema"])
    assert all(str(w) in schema_text for w in DISPLAY_WIDTHS)


@pytest.mark.parametrize("script", ["embed.js", "rate.js"])
def test_the_pages_offer_the_same_widths_as_the_service(script: str) -> None:
    source = (STATIC / script).read_text()
    match = re.search(r"var WIDTHS = \[([\d, ]+)\];", source)
    assert match is not None, f"{script} has no WIDTHS list"
    assert tuple(int(w) for w in match.group(1).split(",")) == DISPLAY_WIDTHS


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8), "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def test_upscaling_is_smooth_not_blocky() -> None:
    # A 32 px left-to-right ramp: stretched by repeating pixels it is 32 flat bands with a jump
    # of 8 grey levels between them; resampled it rises a level or two at a time, and keeps
    # the ramp's colours.
    ramp = np.linspace(0, 255, 32)
    pixels = np.stack([np.tile(ramp, (32, 1))] * 3, axis=-1)
    upscaled = np.asarray(decode(resample(_png(pixels), 1024)).convert("L"), dtype=float)
    assert upscaled.shape == (1024, 1024)
    row = upscaled[512]
    nearest = np.repeat(ramp, 32)
    assert np.abs(np.diff(nearest)).max() > 8
    assert np.abs(np.diff(row[64:-64])).max() <= 3
    assert np.abs(row[64:-64] - nearest[64:-64]).mean() < 6
    assert abs(row.mean() - ramp.mean()) < 3


def test_downscaling_keeps_the_aspect_ratio() -> None:
    pixels = np.zeros((300, 600, 3))
    pixels[:, 300:] = 255
    image = decode(resample(_png(pixels), 128))
    assert image.size == (128, 64)
