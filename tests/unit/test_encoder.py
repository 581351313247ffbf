from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
import pytest

from m3search import load_encoder, stack_dense
from m3search.errors import ConfigError, InputError, InputTooLongError, NonFiniteEmbeddingError
from m3search.models.encoders.pooled import OnnxEncoder
from m3search.models.prepare.cache import PreparedModel
from tests.conftest import NAN_WORD, TINY_SPEC

Factory = Callable[..., OnnxEncoder]
TEXTS = ["the cat sat on the mat", "a dog", "someone plays an instrument " * 3, "man", "", "guitar guitar"]


def test_sorted_batching_equals_one_by_one(tiny_encoder: Factory) -> None:
    batched = stack_dense(tiny_encoder(batch_tokens=10_000, max_batch_size=64).encode(TEXTS))
    single = stack_dense(tiny_encoder(max_batch_size=1).encode(TEXTS))
    np.testing.assert_allclose(batched, single, atol=1e-5)


def test_mean_pooling_ignores_padding(tiny_encoder: Factory) -> None:
    encoder = tiny_encoder()
    alone = encoder.encode(["man"])[0].dense
    padded = encoder.encode(["man", "someone plays an instrument " * 3])[0].dense
    np.testing.assert_allclose(alone, padded, atol=1e-6)
    assert alone is not None and abs(float(np.linalg.norm(alone)) - 1) < 1e-5


def test_token_counts_and_truncation_are_reported(tiny_encoder: Factory) -> None:
    results = tiny_encoder().encode(["cat", "cat " * 40], max_length=10)
    assert (results[0].tokens, results[0].truncated) == (3, False)
    assert (results[1].tokens, results[1].truncated) == (10, True)


def test_overflow_error_names_the_input(tiny_encoder: Factory) -> None:
    with pytest.raises(InputTooLongError, match="input 1 has 42 tokens"):
        tiny_encoder().encode(["cat", "cat " * 40], max_length=10, on_overflow="error")


def test_nan_output_names_the_input(tiny_encoder: Factory) -> None:
    with pytest.raises(NonFiniteEmbeddingError, match="input 2"):
        tiny_encoder().encode(["cat", "dog", f"the {NAN_WORD} cat"])


def test_prefixes_follow_the_kind(tiny_encoder: Factory) -> None:
    encoder = tiny_encoder()
    query = encoder.encode_queries(["cat"])[0]
    document = encoder.encode_documents(["cat"])[0]
    assert query.tokens == 4 and document.tokens == 4
    np.testing.assert_allclose(query.dense, encoder.encode([TINY_SPEC.query_prefix + "cat"])[0].dense)
    np.testing.assert_allclose(document.dense, encoder.encode([TINY_SPEC.doc_prefix + "cat"])[0].dense)
    assert not np.allclose(query.dense, document.dense)  # type: ignore[arg-type]


def test_matryoshka_truncation_renormalises(tiny_encoder: Factory) -> None:
    full = tiny_encoder().encode(TEXTS[:2])
    short = tiny_encoder(dim=4).encode(TEXTS[:2])
    for f, s in zip(full, short, strict=True):
        assert s.dense is not None and f.dense is not None and s.dense.shape == (4,)
        np.testing.assert_allclose(s.dense, f.dense[:4] / np.linalg.norm(f.dense[:4]), atol=1e-6)
    with pytest.raises(ConfigError, match="supports dimensions 8, 4"):
        tiny_encoder(dim=3)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"outputs": ["sparse"]}, "cannot produce sparse"),
        ({"max_length": 17}, "between 1 and 16"),
        ({"max_length": 2}, "special tokens"),
        ({"on_overflow": "drop"}, "on_overflow"),
        ({"kind": "passage"}, "kind must be"),
    ],
)
def test_bad_arguments_raise_config_errors(tiny_encoder: Factory, kwargs: dict[str, object], error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        tiny_encoder().encode(["cat"], **kwargs)


@pytest.mark.parametrize("texts", ["just a string", [b"bytes"], ["ok", None], 42])
def test_non_string_inputs_raise_input_errors(tiny_encoder: Factory, texts: object) -> None:
    with pytest.raises(InputError):
        tiny_encoder().encode(texts)  # type: ignore[arg-type]


def test_empty_input_list_returns_nothing(tiny_encoder: Factory) -> None:
    assert tiny_encoder().encode([]) == []


def test_concurrent_first_calls_load_once(tiny_prepared: PreparedModel) -> None:
    calls = []
    gate = threading.Barrier(8)

    def prepare() -> PreparedModel:
        calls.append(1)
        return tiny_prepared

    encoder = OnnxEncoder(TINY_SPEC, prepare, precision="fp32", threads=1)
    results: list[np.ndarray] = []

    def work() -> None:
        gate.wait()
        results.append(stack_dense(encoder.encode(TEXTS)))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and len(results) == 8
    for matrix in results[1:]:
        np.testing.assert_array_equal(matrix, results[0])


def test_encode_iter_streams_in_order(tiny_encoder: Factory) -> None:
    encoder = tiny_encoder()
    streamed = stack_dense(list(encoder.encode_iter(iter(TEXTS * 3), window=4)))
    np.testing.assert_allclose(streamed, stack_dense(encoder.encode(TEXTS * 3)), atol=1e-6)


def test_hash_encoder_is_deterministic_and_lexical() -> None:
    encoder = load_encoder("hash")
    a, b, c = encoder.encode(["The cat sat", "the CAT sat!", "quantum chromodynamics"])
    assert a.dense is not None and b.dense is not None and c.dense is not None
    np.testing.assert_array_equal(a.dense, b.dense)
    assert a.dense.shape == (384,) and float(a.dense @ c.dense) < 0.5 < float(a.dense @ b.dense)
    assert a.tokens == 3 and not a.truncated
    assert load_encoder("hash").encode(["word " * 10], max_length=4)[0].truncated


def test_capabilities_are_declared_on_every_encoder(tiny_encoder: Factory) -> None:
    """precision, backend and embeds_images are plain attributes of every encoder (callers need no getattr)."""
    from m3search.models.encoders.base import Encoder
    from m3search.models.encoders.clip import ClipEncoder
    from m3search.models.encoders.hashing import HashEncoder
    from m3search.models.registry import get_spec

    hashing: Encoder = HashEncoder(get_spec("hash"))
    assert (hashing.precision, hashing.backend, hashing.embeds_images) == (None, None, False)
    onnx: Encoder = tiny_encoder()
    assert (onnx.precision, onnx.backend, onnx.embeds_images) == ("fp32", "onnxruntime", False)
    assert ClipEncoder.embeds_images and callable(ClipEncoder.encode_images)
