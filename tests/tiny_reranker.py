"""A tiny random-weight BertForSequenceClassification (one label) written with numpy alone (no torch): the
checkpoint names, shapes and config transformers writes, and a word-level tokenizer with BERT's pair template."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from tests.unit.test_builder import _save_safetensors

WORDS = ["the", "a", "man", "is", "playing", "guitar", "cat", "sat", "on", "mat", "dog", "runs", "fast", "heat",
         "shock", "wave", "plate", "flow", "wing", "jet", "hot", "cold"]
HIDDEN, HEADS, INTERMEDIATE, POSITIONS = 16, 2, 32, 64


def bert_word_tokenizer(words: list[str]) -> Any:
    """A ``tokenizers.Tokenizer``: BERT's special tokens, then ``words``; BERT's single and pair templates."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "[MASK]": 4}
    for word in words:
        vocab.setdefault(word, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return tok


def _tokenizer(directory: Path) -> int:
    tok = bert_word_tokenizer(WORDS)
    tok.save(str(directory / "tokenizer.json"))
    return int(tok.get_vocab_size())


def build_tiny_reranker(directory: Path, seed: int = 0) -> Path:
    """Write the checkpoint into ``directory`` (created) and return it."""
    directory.mkdir(parents=True, exist_ok=True)
    vocab = _tokenizer(directory)
    rng = np.random.default_rng(seed)
    tensors: dict[str, tuple[str, np.ndarray]] = {}

    def add(name: str, *shape: int, scale: float = 0.3) -> None:
        tensors[name] = ("F32", (rng.normal(size=shape) * scale).astype(np.float32))

    def norm(name: str) -> None:
        tensors[name + ".weight"] = ("F32", np.ones(HIDDEN, np.float32))
        tensors[name + ".bias"] = ("F32", np.zeros(HIDDEN, np.float32))

    add("bert.embeddings.word_embeddings.weight", vocab, HIDDEN)
    add("bert.embeddings.position_embeddings.weight", POSITIONS, HIDDEN)
    add("bert.embeddings.token_type_embeddings.weight", 2, HIDDEN)
    norm("bert.embeddings.LayerNorm")
    p = "bert.encoder.layer.0."
    for part in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
        add(p + part + ".weight", HIDDEN, HIDDEN), add(p + part + ".bias", HIDDEN)
    norm(p + "attention.output.LayerNorm")
    add(p + "intermediate.dense.weight", INTERMEDIATE, HIDDEN), add(p + "intermediate.dense.bias", INTERMEDIATE)
    add(p + "output.dense.weight", HIDDEN, INTERMEDIATE), add(p + "output.dense.bias", HIDDEN)
    norm(p + "output.LayerNorm")
    add("bert.pooler.dense.weight", HIDDEN, HIDDEN), add("bert.pooler.dense.bias", HIDDEN)
    add("classifier.weight", 1, HIDDEN, scale=1.0), add("classifier.bias", 1)
    _save_safetensors(directory / "model.safetensors", tensors)
    config = {"architectures": ["BertForSequenceClassification"], "model_type": "bert", "hidden_size": HIDDEN,
              "num_attention_heads": HEADS, "num_hidden_layers": 1, "intermediate_size": INTERMEDIATE,
              "vocab_size": vocab, "max_position_embeddings": POSITIONS, "type_vocab_size": 2, "hidden_act": "gelu",
              "layer_norm_eps": 1e-12, "pad_token_id": 0, "id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0}}
    (directory / "config.json").write_text(json.dumps(config))
    return directory
