"""The Qdrant store: an embedded engine (qdrant-edge-py) or a server/cluster (qdrant-client), one store contract."""
