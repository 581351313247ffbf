"""The LlamaIndex and LangChain adapters with real MiniLM weights: the same vectors as the encoder, locally and
through a real server, and semantic (not lexical) retrieval inside each library."""

from __future__ import annotations

import numpy as np
import pytest

from m3search import load_encoder, stack_dense
from m3search.server.app import create_app
from m3search.settings import Settings, get_settings
from tests.live import live_server

pytestmark = pytest.mark.slow

TEXTS = ["A man is playing a guitar.", "The stock market fell sharply today.", "Cats sleep most of the day.",
         "Debian is a free operating system."]
QUERY = "someone performing music on an instrument"  # shares no content word with the guitar sentence


@pytest.fixture
def fp32(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("M3SEARCH_PRECISION", "fp32")  # the adapters read settings from the environment
    return get_settings(home=settings.home, threads=2)


def test_minilm_adapters_equal_the_encoder_and_retrieve_by_meaning(fp32: Settings) -> None:
    from langchain_core.vectorstores import InMemoryVectorStore
    from llama_index.core import Document, VectorStoreIndex
    from llama_index.core import Settings as LlamaSettings

    from m3search.integrations.langchain import M3SearchEmbeddings
    from m3search.integrations.llamaindex import M3SearchEmbedding

    encoder = load_encoder("all-minilm-l6-v2", precision="fp32", settings=fp32)
    expected = stack_dense(encoder.encode_documents(TEXTS))
    local = M3SearchEmbeddings(model="all-minilm-l6-v2")
    np.testing.assert_allclose(local.embed_documents(TEXTS), expected, atol=1e-5)
    app = create_app(fp32, model="all-minilm-l6-v2", db=fp32.home / "server.sqlite3")
    with live_server(app, timeout=120) as url:
        remote = M3SearchEmbedding("all-minilm-l6-v2", base_url=url, timeout=120)
        np.testing.assert_allclose(remote.get_text_embedding_batch(TEXTS), expected, atol=1e-5)
        np.testing.assert_allclose(remote.get_query_embedding(QUERY), encoder.encode_queries([QUERY])[0].dense,
                                   atol=1e-5)
        LlamaSettings.llm = None
        index = VectorStoreIndex.from_documents([Document(text=t) for t in TEXTS], embed_model=remote)
        assert index.as_retriever(similarity_top_k=1).retrieve(QUERY)[0].node.get_content() == TEXTS[0]
    store = InMemoryVectorStore(embedding=local)
    store.add_texts(TEXTS)
    assert store.similarity_search(QUERY, k=1)[0].page_content == TEXTS[0]
