"""Runtime: where an inference session is built (:mod:`.sessions`, over the backends of :mod:`.backends`),
how texts become token ids (:mod:`.tokenize`) and length-aware batches (:mod:`.batching`), and the fidelity
gate (:mod:`.fidelity`, against the fp32 reference of :mod:`.reference`)."""
