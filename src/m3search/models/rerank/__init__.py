"""Rerankers: the catalogue of cross-encoders (:mod:`.registry`), the ONNX cross-encoder (:mod:`.cross_encoder`)
and its fidelity check (:mod:`.fidelity`)."""
