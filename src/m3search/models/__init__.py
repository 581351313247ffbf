"""Models, as a pipeline of sub-packages.

- this package: model facts and resolution (:mod:`.registry`, :mod:`.resolve`, :mod:`.files`, :mod:`.local`);
- :mod:`.prepare`: turn a resolved checkpoint into cached ONNX/OpenVINO graphs (builder, torch export fallback,
  precision variants, calibration);
- :mod:`.runtime`: the session factory, backends, tokenizer, length-aware batching, fidelity gate;
- :mod:`.encoders`: the :class:`~m3search.models.encoders.base.Encoder` API and its implementations;
- :mod:`.rerank`: cross-encoder rerankers.

The LLM client is not a local model: it lives in :mod:`m3search.llm`.
"""
