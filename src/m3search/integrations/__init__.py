"""Adapters for other frameworks, each behind its own extra.

- :mod:`m3search.integrations.llamaindex` (``pip install 'm3search[llamaindex]'``): ``M3SearchEmbedding``, a
  LlamaIndex ``BaseEmbedding``; ``M3SearchSparseEmbedding``, its sparse embedding (with ``sparse_doc_fn`` /
  ``sparse_query_fn`` for the hybrid mode of its ``QdrantVectorStore``); ``M3SearchRetriever``.
- :mod:`m3search.integrations.langchain` (``pip install 'm3search[langchain]'``): ``M3SearchEmbeddings``, a
  LangChain ``Embeddings``; ``M3SearchSparseEmbeddings``, langchain-qdrant's ``SparseEmbeddings``;
  ``M3SearchRetriever``.

They embed with the local encoder (``load_encoder``) or through an m3search server (``/v1/embeddings`` for dense
vectors, ``/api/v1/encode`` for sparse ones), and apply the model's query and document prefixes. Importing an
adapter without its extra raises :class:`~m3search.errors.MissingDependencyError` naming the extra.
"""
