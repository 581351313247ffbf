"""``POST /api/v1/search/image``: image->image search of an image collection with a base64 image.

Text->image search needs nothing new: ``/api/v1/search`` embeds the query with the collection's model, and an
image collection's model (CLIP) embeds text with its text tower.
"""

from __future__ import annotations

import base64
import binascii

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from m3search.errors import InputError
from m3search.retrieval.search import Searcher, check_image_request
from m3search.retrieval.types import SearchRequest
from m3search.server.routes.common import ERRORS, json_response, service_of
from m3search.server.schemas import ImageSearchBody, SearchResponse

router = APIRouter(prefix="/api/v1", tags=["search"], responses=ERRORS)


def decode_image(text: str) -> bytes:
    """The bytes of a base64 image (``data:image/png;base64,...`` accepted); :class:`InputError` if not base64."""
    payload = text.split(",", 1)[1] if text.startswith("data:") else text
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InputError("'image' must be the image file's bytes in base64") from exc


@router.post("/search/image", response_model=SearchResponse)
async def search_image(body: ImageSearchBody, request: Request) -> Response:
    """Image->image search (dense): the image is embedded by the collection's image model (CLIP's vision tower)."""
    service = service_of(request)
    data = decode_image(body.image)
    checked = check_image_request(SearchRequest("dense", body.k, body.filters))  # once, before the model loads
    active = await run_in_threadpool(service.store.active_set, body.collection)
    encoder = service.encoder_for_set(active)
    searcher = Searcher(service.store, encoder, ann_threshold=service.settings.ann_threshold,
                        runtime=service.runtime)
    result = await run_in_threadpool(searcher.search_image_checked, body.collection, data, checked)
    return json_response(result.as_dict())
