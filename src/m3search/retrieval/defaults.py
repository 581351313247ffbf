"""``hybrid``'s fusion settings: the request's, else the collection's saved ones (``m3search eval --tune``), else
the built-in defaults (:func:`~m3search.retrieval.fusion.default_fusion`, chosen from measurements).

Saved settings live in the active embedding set's options (``set_options(...)["fusion"]``), in SQLite and Qdrant
stores alike: they belong to the vectors they were tuned on, so a collection re-embedded with another model starts
again from the built-in defaults.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from m3search.errors import InputError
from m3search.retrieval.fusion import DEFAULT_RRF_K, FUSION_METHODS, FusionSettings, default_fusion
from m3search.retrieval.types import SearchRequest
from m3search.store.base import Store
from m3search.store.types import EmbeddingSet

OPTION = "fusion"  # the key of the saved settings in a set's options


def saved_fusion(store: Store, target: EmbeddingSet) -> FusionSettings | None:
    """The settings saved for ``target`` (None when none were)."""
    found = store.set_options(target.id).get(OPTION)
    return settings_from(found) if isinstance(found, dict) else None


def settings_from(body: Mapping[str, Any]) -> FusionSettings:
    """:class:`FusionSettings` from their :meth:`~FusionSettings.as_dict`; :class:`InputError` if malformed."""
    method, weights, rrf_k = body.get("fusion"), body.get("weights"), body.get("rrf_k", DEFAULT_RRF_K)
    if method not in FUSION_METHODS or not isinstance(weights, dict) or not isinstance(rrf_k, int) or rrf_k < 0:
        raise InputError(f"saved fusion settings {dict(body)} are not fusion/weights/rrf_k")
    return FusionSettings(method, {str(n): float(w) for n, w in weights.items()}, rrf_k)


def save_fusion(store: Store, target: EmbeddingSet, settings: FusionSettings) -> None:
    """Save ``settings`` as the default of ``target``'s ``hybrid`` searches (other options kept)."""
    store.put_set_options(target.id, {**store.set_options(target.id), OPTION: settings.as_dict()})


def hybrid_request(request: SearchRequest, saved: FusionSettings | None, names: Sequence[str]) -> SearchRequest:
    """``request`` with every fusion field it leaves out (None) taken from ``saved``, else the built-in defaults of
    fusing ``names``."""
    base = saved or default_fusion(names)
    return replace(request, fusion=request.fusion or base.method,
                   rrf_k=request.rrf_k if request.rrf_k is not None else base.rrf_k,
                   weights=request.weights if request.weights is not None else dict(base.weights))


def hybrid_settings(request: SearchRequest, names: Sequence[str]) -> FusionSettings:
    """The fusion of a ``hybrid`` request over ``names`` (left-out fields: the built-in defaults)."""
    full = hybrid_request(request, None, names)
    assert full.fusion is not None and full.rrf_k is not None and full.weights is not None
    return FusionSettings(full.fusion, full.weights, full.rrf_k)
