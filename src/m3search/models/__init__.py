"""Models: the registry of model facts, offline resolution, ONNX preparation and the encoders."""
