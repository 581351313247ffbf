"""The LlamaIndex and LangChain adapters, with the installed libraries: local vectors equal the encoder's (prefixes
included), remote vectors from a real server on 127.0.0.1 equal local ones, errors are typed, and each library's own
index/vector store retrieves with them."""

from __future__ import annotations

import asyncio
import importlib
import socket
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from m3search.errors import DimensionError, InputError, MissingDependencyError, RemoteError, RemoteRequestError
from m3search.integrations.langchain import M3SearchEmbeddings
from m3search.integrations.llamaindex import M3SearchEmbedding
from m3search.models.encoders.base import Encoder
from m3search.models.encoders.loader import load_encoder
from m3search.models.registry import get_spec
from m3search.server.app import create_app
from m3search.settings import get_settings
from tests.conftest import FakeM3Encoder
from tests.live import live_server

PREFIXED = "nomic-embed-text-v1.5"  # query prefix "search_query: ", document prefix "search_document: ", MRL dims
TEXTS = ["the cat sat on the mat", "a dog runs fast", "heat transfer in a wing", "someone plays an instrument",
         "the man is playing guitar", "boundary layer flow", "cats and dogs", "one", "two words", "x y z"]


def _prefixed_encoder(dim: int | None = None) -> Encoder:
    """The same fake encoder (with nomic's prefixes) that the server's ``fake_loader`` builds for PREFIXED."""
    return FakeM3Encoder(replace(get_spec(PREFIXED), max_tokens=64), dim=dim)


def _dense(embeddings: list[Any]) -> np.ndarray:
    return np.stack([e.dense for e in embeddings])




# local backend ---------------------------------------------------------------------------------------


def test_local_vectors_equal_the_encoder_with_query_and_document_prefixes() -> None:
    reference = _prefixed_encoder()
    queries, documents = _dense(reference.encode_queries(TEXTS[:3])), _dense(reference.encode_documents(TEXTS))
    assert not np.allclose(queries, _dense(reference.encode_documents(TEXTS[:3])))  # the prefixes change vectors
    llama = M3SearchEmbedding(encoder=_prefixed_encoder(), embed_batch_size=3)
    chain = M3SearchEmbeddings(encoder=_prefixed_encoder())
    assert llama.model_name == chain.model == PREFIXED
    np.testing.assert_array_equal([llama.get_query_embedding(q) for q in TEXTS[:3]], queries)
    np.testing.assert_array_equal([chain.embed_query(q) for q in TEXTS[:3]], queries)
    np.testing.assert_array_equal(llama.get_text_embedding(TEXTS[0]), documents[0])
    np.testing.assert_array_equal(llama.get_text_embedding_batch(TEXTS), documents)  # 4 batches of <= 3, in order
    np.testing.assert_array_equal(chain.embed_documents(TEXTS), documents)


def test_local_by_name_loads_lazily_and_checks_dimensions() -> None:
    chain = M3SearchEmbeddings(model="hash")
    assert not chain.backend._encoder.loaded  # type: ignore[attr-defined]  # nothing loaded before the first embed
    expected = _dense(load_encoder("hash").encode_documents(TEXTS))
    np.testing.assert_array_equal(chain.embed_documents(TEXTS), expected)
    np.testing.assert_array_equal(M3SearchEmbedding(model_name="hash").get_text_embedding_batch(TEXTS), expected)
    with pytest.raises(DimensionError, match="not Matryoshka"):
        M3SearchEmbeddings(model="hash", dimensions=64)
    with pytest.raises(DimensionError, match="not Matryoshka"):
        M3SearchEmbedding(model_name="hash", dimensions=64)


def test_async_variants_equal_sync() -> None:
    llama = M3SearchEmbedding(encoder=_prefixed_encoder())
    chain = M3SearchEmbeddings(encoder=_prefixed_encoder())

    async def both() -> tuple[Any, ...]:
        return (await llama.aget_query_embedding(TEXTS[0]), await llama.aget_text_embedding(TEXTS[1]),
                await llama.aget_text_embedding_batch(TEXTS), await chain.aembed_query(TEXTS[0]),
                await chain.aembed_documents(TEXTS))

    query, text, batch, chain_query, chain_docs = asyncio.run(both())
    assert query == llama.get_query_embedding(TEXTS[0]) == chain_query
    assert text == llama.get_text_embedding(TEXTS[1])
    assert batch == llama.get_text_embedding_batch(TEXTS) == chain_docs


# remote backend --------------------------------------------------------------------------------------


def test_server_input_type_applies_the_prefix(serve: Callable[..., AbstractContextManager[str]]) -> None:
    import httpx

    with serve() as url:
        for kind, encode in (("query", "encode_queries"), ("document", "encode_documents")):
            body = httpx.post(f"{url}/v1/embeddings", json={"input": TEXTS[:2], "model": PREFIXED,
                                                            "input_type": kind}).json()
            assert body["input_type"] == kind
            expected = _dense(getattr(_prefixed_encoder(), encode)(TEXTS[:2]))
            np.testing.assert_allclose([d["embedding"] for d in body["data"]], expected, atol=1e-6)
        plain = httpx.post(f"{url}/v1/embeddings", json={"input": TEXTS[:2], "model": PREFIXED}).json()
        assert "input_type" not in plain  # unchanged OpenAI behaviour without the extension
        np.testing.assert_allclose([d["embedding"] for d in plain["data"]],
                                   _dense(_prefixed_encoder().encode(TEXTS[:2])), atol=1e-6)


def test_remote_equals_local_in_batches_with_a_key_sync_and_async(
        serve: Callable[..., AbstractContextManager[str]]) -> None:
    queries = _dense(_prefixed_encoder(256).encode_queries(TEXTS[:2]))
    documents = _dense(_prefixed_encoder(256).encode_documents(TEXTS))
    with serve(api_keys=["k-one"], max_inputs=3) as url:  # more than 3 texts in one request would be a 413
        llama = M3SearchEmbedding(PREFIXED, base_url=f"{url}/v1", api_key="k-one", dimensions=256,
                                  embed_batch_size=3)
        chain = M3SearchEmbeddings(PREFIXED, base_url=url, api_key="k-one", dimensions=256, batch_size=3)
        np.testing.assert_allclose(llama.get_text_embedding_batch(TEXTS), documents, atol=1e-6)
        np.testing.assert_allclose(chain.embed_documents(TEXTS), documents, atol=1e-6)
        np.testing.assert_allclose([llama.get_query_embedding(q) for q in TEXTS[:2]], queries, atol=1e-6)
        np.testing.assert_allclose([chain.embed_query(q) for q in TEXTS[:2]], queries, atol=1e-6)

        async def both() -> tuple[Any, ...]:
            return (await llama.aget_query_embedding(TEXTS[0]), await llama.aget_text_embedding_batch(TEXTS),
                    await chain.aembed_query(TEXTS[1]), await chain.aembed_documents(TEXTS))

        llama_query, llama_docs, chain_query, chain_docs = asyncio.run(both())
        np.testing.assert_allclose([llama_query, chain_query], queries, atol=1e-6)
        np.testing.assert_allclose(llama_docs, documents, atol=1e-6)
        np.testing.assert_allclose(chain_docs, documents, atol=1e-6)
        with pytest.raises(RemoteRequestError, match=r"HTTP 413") as too_many:
            M3SearchEmbeddings(PREFIXED, base_url=url, api_key="k-one", batch_size=4).embed_documents(TEXTS)
        assert too_many.value.status == 413


def test_remote_errors_are_typed(serve: Callable[..., AbstractContextManager[str]]) -> None:
    with serve(api_keys=["k-one"]) as url:
        with pytest.raises(RemoteRequestError, match=r"HTTP 401.*api_key=") as unauthorised:
            M3SearchEmbeddings(base_url=url).embed_query("x")
        assert unauthorised.value.status == 401 and "k-one" not in str(unauthorised.value)
        with pytest.raises(RemoteRequestError, match=r"HTTP 400.*supports dimensions") as bad_dim:
            M3SearchEmbeddings(PREFIXED, base_url=url, api_key="k-one", dimensions=50).embed_documents(["x"])
        assert bad_dim.value.code == "invalid_dimensions" and isinstance(bad_dim.value, InputError)
        with pytest.raises(RemoteRequestError, match=r"HTTP 404.*unknown model") as unknown:
            asyncio.run(M3SearchEmbedding("no-such-model", base_url=url, api_key="k-one").aget_query_embedding("x"))
        assert unknown.value.code == "model_not_found"
    assert "k-one" not in repr(M3SearchEmbeddings(base_url="http://127.0.0.1:1", api_key="k-one"))
    assert "k-one" not in repr(M3SearchEmbedding(base_url="http://127.0.0.1:1", api_key="k-one"))


def test_remote_timeouts_and_unreachable_servers() -> None:
    with socket.socket() as silent:  # accepts connections (the backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises(RemoteError, match=r"did not answer within 0.3 s") as sync_timeout:
            M3SearchEmbeddings(base_url=url, timeout=0.3).embed_query("x")
        assert sync_timeout.value.code == "timeout"
        with pytest.raises(RemoteError, match=r"did not answer within 0.3 s"):
            asyncio.run(M3SearchEmbedding(base_url=url, timeout=0.3).aget_text_embedding_batch(["x"]))
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with pytest.raises(RemoteError, match=r"unreachable.*m3search serve") as refused:
        M3SearchEmbedding(base_url=f"http://127.0.0.1:{port}").get_query_embedding("x")
    assert refused.value.code == "unreachable"


def test_a_server_without_input_type_is_refused_not_silently_used() -> None:
    from fastapi import FastAPI

    other = FastAPI()  # an OpenAI-compatible server that ignores input_type (an older m3search, another product)

    @other.post("/v1/embeddings")
    async def embeddings(body: dict[str, Any]) -> dict[str, Any]:
        return {"object": "list", "model": "m", "data": [{"index": i, "embedding": [1.0, 0.0]}
                                                         for i, _ in enumerate(body["input"])]}

    with live_server(other) as url, pytest.raises(RemoteError, match="does not apply query/document prefixes"):
        M3SearchEmbeddings(base_url=url).embed_query("x")


def test_bad_arguments_are_config_errors() -> None:
    from m3search.errors import ConfigError, UnknownModelError

    with pytest.raises(ConfigError, match="http"):
        M3SearchEmbeddings(base_url="127.0.0.1:8000")
    with pytest.raises(ConfigError, match="timeout"):
        M3SearchEmbedding(base_url="http://127.0.0.1:8000", timeout=0)
    with pytest.raises(UnknownModelError):
        M3SearchEmbeddings(model="no-such-model")
    with pytest.raises(ConfigError, match="no dense vectors"):
        M3SearchEmbeddings(model="splade-tiny")


# the libraries themselves ----------------------------------------------------------------------------


def _llama_top(embed_model: M3SearchEmbedding, query: str) -> str:
    from llama_index.core import Document, Settings, VectorStoreIndex

    Settings.llm = None  # a MockLLM: nothing may call OpenAI
    index = VectorStoreIndex.from_documents([Document(text=t) for t in TEXTS], embed_model=embed_model)
    nodes = index.as_retriever(similarity_top_k=2).retrieve(query)
    assert len(nodes) == 2 and nodes[0].score is not None and nodes[0].score >= nodes[1].score  # type: ignore[operator]
    return str(nodes[0].node.get_content())


def _langchain_top(embeddings: M3SearchEmbeddings, query: str) -> str:
    from langchain_core.vectorstores import InMemoryVectorStore

    store = InMemoryVectorStore(embedding=embeddings)
    store.add_texts(TEXTS, metadatas=[{"i": i} for i in range(len(TEXTS))])
    found = store.similarity_search(query, k=2)
    assert len(found) == 2 and found[0].metadata["i"] == TEXTS.index(found[0].page_content)
    return found[0].page_content


def test_llamaindex_and_langchain_retrieve_with_the_adapters(
        serve: Callable[..., AbstractContextManager[str]]) -> None:
    query = "boundary layer flow over a wing"  # shares words with one text only among the top
    assert _llama_top(M3SearchEmbedding(model_name="hash"), query) == "boundary layer flow"
    assert _langchain_top(M3SearchEmbeddings(model="hash"), query) == "boundary layer flow"
    with serve() as url:
        assert _llama_top(M3SearchEmbedding(PREFIXED, base_url=url), query) == "boundary layer flow"
        assert _langchain_top(M3SearchEmbeddings(PREFIXED, base_url=url), query) == "boundary layer flow"


@pytest.mark.parametrize(("module", "library", "extra"), [
    ("m3search.integrations.llamaindex", "llama_index.core", "llamaindex"),
    ("m3search.integrations.langchain", "langchain_core", "langchain"),
])
def test_a_missing_library_names_the_extra(monkeypatch: pytest.MonkeyPatch, module: str, library: str,
                                           extra: str) -> None:
    monkeypatch.setitem(sys.modules, library, None)  # what an uninstalled package looks like to import
    monkeypatch.delitem(sys.modules, module)
    with pytest.raises(MissingDependencyError, match=rf"pip install 'm3search\[{extra}\]'") as missing:
        importlib.import_module(module)
    assert missing.value.extra == extra


# retrievers over an m3search collection --------------------------------------------------------------

WORDS_OF = {"wing": "boundary layer flow over a wing", "stall": "the wing stalls at high angle of attack",
            "heat": "heat transfer in a pipe", "cat": "the cat sat on the mat", "dog": "a dog runs fast"}


@pytest.fixture
def indexed(tmp_path: Path) -> Path:
    """An index file with collection "kb" of the hash model (documents with metadata)."""
    from m3search.ingest.pipeline import index_documents
    from m3search.store.sqlite import SQLiteStore
    from m3search.store.types import Document

    db = tmp_path / "index.sqlite3"
    documents = [Document(key, text, "test", metadata={"topic": "aero" if key in ("wing", "stall") else "other"})
                 for key, text in WORDS_OF.items()]
    with SQLiteStore(db) as store:
        index_documents(store, load_encoder("hash"), "kb", documents)
    return db


def _expected(db: Path, query: str, **request: Any) -> list[Any]:
    from m3search.retrieval.search import Searcher
    from m3search.retrieval.types import SearchRequest
    from m3search.store.sqlite import SQLiteStore

    with SQLiteStore(db) as store:
        return Searcher(store, load_encoder("hash")).search("kb", query, SearchRequest(**request)).hits


def test_retrievers_return_the_searchers_hits_locally_and_through_a_server(indexed: Path) -> None:
    from m3search.integrations.langchain import M3SearchRetriever as ChainRetriever
    from m3search.integrations.llamaindex import M3SearchRetriever as LlamaRetriever

    query, filters = "wing flow", {"topic": "aero"}
    hybrid = _expected(indexed, query, strategy="hybrid", k=3)
    filtered = _expected(indexed, query, strategy="dense", k=5, filters=filters)
    assert [h.document_id for h in hybrid][:1] == ["wing"] and len(hybrid) == 3
    assert {h.document_id for h in filtered} == {"wing", "stall"}
    app = create_app(get_settings(), model="hash", loader=lambda name, dim, precision: load_encoder(name, dim=dim),
                     db=indexed)
    with live_server(app) as url:
        for where in ({"db": indexed}, {"base_url": url}):
            chain = ChainRetriever("kb", k=3, **where)  # type: ignore[arg-type]
            documents = chain.invoke(query)
            assert [(d.metadata["document_id"], d.page_content) for d in documents] == \
                [(h.document_id, h.text) for h in hybrid]
            assert documents[0].metadata["topic"] == "aero" and documents[0].id == f"wing#{hybrid[0].chunk_id}"
            assert [d.metadata["score"] for d in documents] == pytest.approx([h.score for h in hybrid])
            assert set(documents[0].metadata["breakdown"]) == set(hybrid[0].breakdown)  # dense, bm25 ranks
            assert [d.metadata["other_chunks"] for d in documents] == [  # one hit per document (the default)
                [c.as_dict() for c in h.other_chunks or ()] for h in hybrid]
            chunks = ChainRetriever("kb", k=3, group_by="chunk", **where).invoke(query)  # type: ignore[arg-type]
            assert [d.id for d in chunks] == [f"{h.document_id}#{h.chunk_id}" for h in
                                              _expected(indexed, query, strategy="hybrid", k=3, group_by="chunk")]
            assert all("other_chunks" not in d.metadata for d in chunks)
            llama = LlamaRetriever("kb", strategy="dense", k=5, filters=filters, **where)  # type: ignore[arg-type]
            nodes = llama.retrieve(query)
            assert [n.node.metadata["document_id"] for n in nodes] == [h.document_id for h in filtered]
            assert [n.score for n in nodes] == pytest.approx([h.score for h in filtered])
            assert nodes[0].node.source_node is not None and nodes[0].node.source_node.node_id == "wing"
            assert "breakdown" not in nodes[0].node.get_content(metadata_mode="llm")  # type: ignore[attr-defined]
            anodes = asyncio.run(llama.aretrieve(query))
            adocs = asyncio.run(chain.ainvoke(query))
            assert [n.node.node_id for n in anodes] == [n.node.node_id for n in nodes]
            assert [d.id for d in adocs] == [d.id for d in documents]
            chain.close()
            llama.close()


def test_local_search_opens_on_first_use_and_again_after_close(indexed: Path) -> None:
    from m3search.integrations._search import LocalSearch
    from m3search.retrieval.search import Searcher
    from m3search.store.sqlite import SQLiteStore

    local = LocalSearch("kb", db=indexed, model="hash")
    assert not local._searcher.loaded  # nothing opened before the first search
    first = local.searcher
    hits = [h.chunk_id for h in local.search("wing flow")]
    assert local.searcher is first and hits == [h.chunk_id for h in _expected(indexed, "wing flow")]
    local.close()
    assert not local._searcher.loaded
    assert local.searcher is not first and [h.chunk_id for h in local.search("wing flow")] == hits
    local.close()
    with SQLiteStore(indexed) as store:  # a Searcher it was given stays the caller's: close() leaves it open
        given = LocalSearch("kb", searcher=Searcher(store, load_encoder("hash")))
        given.close()
        assert [h.chunk_id for h in given.search("wing flow")] == hits


def test_retriever_errors_are_typed(indexed: Path) -> None:
    from m3search.errors import CollectionNotFoundError
    from m3search.integrations.langchain import M3SearchRetriever as ChainRetriever
    from m3search.integrations.llamaindex import M3SearchRetriever as LlamaRetriever

    with pytest.raises(InputError, match="unknown search option"):
        ChainRetriever("kb", db=indexed, rfr_k=3)
    with pytest.raises(InputError, match="unknown strategy"):
        LlamaRetriever("kb", db=indexed, strategy="semantic")
    with pytest.raises(CollectionNotFoundError):
        ChainRetriever("nope", db=indexed).invoke("x")
    app = create_app(get_settings(api_keys=["k-one"]), model="hash",
                     loader=lambda name, dim, precision: load_encoder(name, dim=dim), db=indexed)
    with live_server(app) as url:
        with pytest.raises(RemoteRequestError, match="HTTP 401"):
            LlamaRetriever("kb", base_url=url).retrieve("x")
        with pytest.raises(RemoteRequestError, match="HTTP 404") as missing:
            ChainRetriever("nope", base_url=url, api_key="k-one").invoke("x")
        assert missing.value.code == "collection_not_found"
