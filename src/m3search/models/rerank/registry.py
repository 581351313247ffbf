"""The reranker registry: cross-encoder facts as typed, frozen data (the sibling of :mod:`.registry`).

A cross-encoder reads a (query, passage) pair in one pass and returns one relevance logit. Its files are found,
downloaded, exported to ONNX and quantized by the same machinery as the encoders' (:mod:`.resolve`,
:mod:`.prepare`): :attr:`RerankerSpec.weights` is the view of the facts that machinery works on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from m3search.errors import ConfigError, UnknownModelError
from m3search.models.registry import ModelPackage, ModelSpec

RerankerFamily = Literal["bert", "xlm-roberta"]
_FILES = ("*.json", "*.safetensors", "*.txt", "*.model")
LLM = "llm"  # the reserved name of LLM reranking (an OpenAI-compatible chat endpoint), not a registry entry


@dataclass(frozen=True)
class RerankerSpec:
    """Facts about one cross-encoder reranker.

    Attributes:
        name: registry name (``--rerank NAME``).
        hf_repo: Hugging Face repository id.
        revision: pinned 40-character commit of ``hf_repo``.
        architecture: the transformers class of the checkpoint (``*ForSequenceClassification``, one label).
        max_tokens: longest pair the model was built for (special tokens included).
        default_length: tokens per pair used unless the caller says otherwise (long pairs cost quadratic time).
        sigmoid: whether scores are ``sigmoid(logit)`` (what the reference library reports) or the raw logit.
        family: architecture family (graph fusions; XLM-R pairs carry no token types).
        license: licence of the weights.
        size_gb: approximate fp32 download size.
        aliases: other repository ids that name the same model (renamed repositories).
        int8_embeddings: quantize the word-embedding table too (large vocabularies).
        files: file patterns that ``models pull`` downloads.
    """

    name: str
    hf_repo: str
    revision: str
    architecture: str
    max_tokens: int
    default_length: int
    sigmoid: bool
    family: RerankerFamily
    license: str
    size_gb: float
    aliases: tuple[str, ...] = ()
    int8_embeddings: bool = False
    packages: tuple[ModelPackage, ...] = ()
    files: tuple[str, ...] = _FILES
    description: str = ""

    def __post_init__(self) -> None:
        if not 0 < self.default_length <= self.max_tokens:
            raise ConfigError(f"reranker '{self.name}': default_length must be in 1..max_tokens")
        if not (self.hf_repo and len(self.revision) == 40):
            raise ConfigError(f"reranker '{self.name}': a pinned 40-character revision is required")
        if not self.architecture.endswith("ForSequenceClassification"):
            raise ConfigError(f"reranker '{self.name}': a *ForSequenceClassification architecture is required")

    @property
    def weights(self) -> ModelSpec:
        """The facts that file resolution, download and the prepared-graph cache need, as a :class:`ModelSpec`.

        Its ``outputs``/``pooling`` are placeholders: the reranker's graph is exported by
        :func:`m3search.models.rerank.cross_encoder.export_classifier`, never as an embedding model.
        """
        return ModelSpec(
            name=self.name, hf_repo=self.hf_repo, revision=self.revision, dim=1, max_tokens=self.max_tokens,
            pooling="cls", normalize=False, outputs=("dense",), family=self.family, license=self.license,
            size_gb=self.size_gb, packages=self.packages, files=self.files, int8_embeddings=self.int8_embeddings,
            description=self.description,
        )


_SPECS: tuple[RerankerSpec, ...] = (
    RerankerSpec(
        name="bge-reranker-v2-m3", hf_repo="BAAI/bge-reranker-v2-m3",
        revision="953dc6f6f85a1b2dbfca4c34a2796e7dde08d41e",
        architecture="XLMRobertaForSequenceClassification", max_tokens=8192, default_length=512, sigmoid=True,
        family="xlm-roberta", license="Apache-2.0", size_gb=2.27, int8_embeddings=True,
        description="multilingual cross-encoder on the BGE-M3 backbone (568M); scores are sigmoid(logit) in 0..1",
    ),
    RerankerSpec(
        name="ms-marco-minilm-l-6-v2", hf_repo="cross-encoder/ms-marco-MiniLM-L6-v2",
        revision="c5ee24cb16019beea0893ab7796b1df96625c6b8",
        architecture="BertForSequenceClassification", max_tokens=512, default_length=512, sigmoid=False,
        family="bert", license="Apache-2.0", size_gb=0.09, aliases=("cross-encoder/ms-marco-MiniLM-L-6-v2",),
        description="small English cross-encoder trained on MS MARCO; scores are raw logits",
    ),
)

_BY_NAME: dict[str, RerankerSpec] = {spec.name: spec for spec in _SPECS}
_BY_REPO: dict[str, RerankerSpec] = {
    repo.lower(): spec for spec in _SPECS for repo in (spec.hf_repo, *spec.aliases)
}


def list_rerankers() -> list[RerankerSpec]:
    """All registered rerankers, in registry order."""
    return list(_SPECS)


def find_reranker(name: str) -> RerankerSpec | None:
    """The reranker named ``name`` (registry name or repository id, case-insensitive), or None."""
    key = name.strip().lower()
    return _BY_NAME.get(key) or _BY_REPO.get(key)


def get_reranker(name: str) -> RerankerSpec:
    """Look a reranker up by registry name or Hugging Face repository id (case-insensitive)."""
    spec = find_reranker(name)
    if spec is None:
        raise UnknownModelError(name, [*_BY_NAME, LLM])
    return spec
