"""Retrieval: strategies, fusion, in-memory indexes, evaluation."""
