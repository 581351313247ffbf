"""The index: documents, chunks and vectors of each collection, with the model configuration that made them."""
