"""LangChain embeddings over m3search (``pip install 'm3search[langchain]'``).

::

    from langchain_core.vectorstores import InMemoryVectorStore
    from m3search.integrations.langchain import M3SearchEmbeddings

    embeddings = M3SearchEmbeddings(model="bge-m3")                      # in-process encoder
    embeddings = M3SearchEmbeddings(base_url="http://127.0.0.1:8000")   # an m3search server
    store = InMemoryVectorStore(embedding=embeddings)
"""

from __future__ import annotations

from pathlib import Path

from m3search._optional import require

require("langchain_core", "langchain", "The LangChain adapter")

from langchain_core.embeddings import Embeddings  # noqa: E402

from m3search.integrations._backend import DEFAULT_BATCH_SIZE, Backend, LocalBackend, RemoteBackend  # noqa: E402
from m3search.integrations._http import DEFAULT_TIMEOUT  # noqa: E402
from m3search.models.encoder import Encoder  # noqa: E402

__all__ = ["M3SearchEmbeddings"]


class M3SearchEmbeddings(Embeddings):
    """LangChain embeddings backed by m3search: ``embed_query`` applies the model's query prefix,
    ``embed_documents`` its document prefix.

    Without ``base_url`` it runs the model in this process (loaded on first use); with ``base_url`` it calls that
    m3search server's ``/v1/embeddings`` (``api_key`` as bearer token), ``batch_size`` texts per request.

    Args:
        model: registry name or Hugging Face repo id (default: ``M3SEARCH_DEFAULT_MODEL`` locally, the server's
            default model remotely).
        base_url: an m3search server's URL; None embeds locally.
        api_key: the server's API key.
        dimensions: a Matryoshka dimension of the model.
        timeout: seconds per server request.
        batch_size: texts per server request.
        model_path: a local directory with the model's files.
        encoder: a ready local encoder (tests, custom models).
    """

    def __init__(self, model: str | None = None, *, base_url: str | None = None, api_key: str | None = None,
                 dimensions: int | None = None, timeout: float = DEFAULT_TIMEOUT,
                 batch_size: int = DEFAULT_BATCH_SIZE, model_path: str | Path | None = None,
                 encoder: Encoder | None = None) -> None:
        self.backend: Backend
        if base_url is not None:
            self.backend = RemoteBackend(base_url, model=model, api_key=api_key, dimensions=dimensions,
                                         timeout=timeout, batch_size=batch_size, extra="langchain")
        else:
            self.backend = LocalBackend(model, path=model_path, dimensions=dimensions, encoder=encoder)
        self.model = self.backend.model

    def __repr__(self) -> str:
        return f"M3SearchEmbeddings(backend={self.backend!r})"

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Document vectors (document prefix), in input order."""
        return self.backend.embed(texts, "document")

    def embed_query(self, text: str) -> list[float]:
        """The query vector (query prefix)."""
        return self.backend.embed([text], "query")[0]

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """:meth:`embed_documents` without blocking the event loop."""
        return await self.backend.aembed(texts, "document")

    async def aembed_query(self, text: str) -> list[float]:
        """:meth:`embed_query` without blocking the event loop."""
        return (await self.backend.aembed([text], "query"))[0]
