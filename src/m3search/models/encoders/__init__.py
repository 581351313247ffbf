"""Encoders: the :class:`~m3search.models.encoders.base.Encoder` API (:mod:`.base`), the ONNX implementations
(:mod:`.pooled`, :mod:`.bge_m3`, :mod:`.clip`), the torch-free :mod:`.hashing` test encoder, image decoding
(:mod:`.images`), the :func:`~m3search.models.encoders.loader.load_encoder` façade
and BGE-M3 scoring (:mod:`.scores`)."""
