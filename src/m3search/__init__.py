"""m3search: local-first embedding and hybrid retrieval built around BAAI/bge-m3.

Importing the package does no work: models load on first use.
"""

from m3search.errors import M3SearchError
from m3search.models.encoders.base import Encoder, stack_dense
from m3search.models.encoders.bge_m3 import BGEM3Encoder
from m3search.models.encoders.loader import load_encoder
from m3search.models.encoders.scores import M3Scores, colbert_score, compute_score, lexical_matching_score
from m3search.models.registry import ModelSpec, get_spec, list_specs
from m3search.settings import Settings, get_settings
from m3search.types import Embedding, SparseVector

__all__ = [
    "BGEM3Encoder",
    "Embedding",
    "Encoder",
    "M3Scores",
    "M3SearchError",
    "ModelSpec",
    "Settings",
    "SparseVector",
    "colbert_score",
    "compute_score",
    "get_settings",
    "get_spec",
    "lexical_matching_score",
    "list_specs",
    "load_encoder",
    "stack_dense",
]
__version__ = "0.1.0"
