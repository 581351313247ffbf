"""Adapters for other frameworks, each behind its own extra.

- :mod:`m3search.integrations.llamaindex` (``pip install 'm3search[llamaindex]'``): ``M3SearchEmbedding``, a
  LlamaIndex ``BaseEmbedding``.
- :mod:`m3search.integrations.langchain` (``pip install 'm3search[langchain]'``): ``M3SearchEmbeddings``, a
  LangChain ``Embeddings``.

Both embed with the local encoder (``load_encoder``) or through an m3search server's ``/v1/embeddings``, and apply
the model's query and document prefixes. Importing an adapter without its extra raises
:class:`~m3search.errors.MissingDependencyError` naming the extra.
"""
