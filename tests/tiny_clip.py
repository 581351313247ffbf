"""A tiny random-weight CLIP with ViT-B/32's architecture and file layout (real CLIP weights are not obtainable here).

The tokenizer is a small byte-level BPE shaped like CLIP's (no end-of-word suffix): lower-cased, ``<|startoftext|>``,
the two special tokens holding the highest ids, and ``eos_token_id`` 2 in the config, as in
openai/clip-vit-base-patch32 (so pooling takes the arg-max id, the end-of-text token, like the real model).
"""

from __future__ import annotations

import json
from pathlib import Path

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
CORPUS = [
    "a photo of a cat", "a photo of a dog", "an astronaut in space", "a cup of coffee on a table",
    "a black and white photo of a man with a camera", "the quick brown fox jumps over the lazy dog",
    "images and text in one space", "search for pictures with words", "chelsea the cat", "rocket launch",
]


def build_tokenizer(directory: Path) -> int:
    """Train the tokenizer, write ``tokenizer.json``; returns the vocabulary size."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())  # every byte is in the vocabulary: no unknown pieces
    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(CORPUS * 20, trainer)
    # The special tokens join the model's own vocabulary with the highest ids, as in CLIP's vocab.json (and
    # transformers' CLIPTokenizer, which rebuilds the BPE from vocab and merges, finds its unk token there).
    vocab_file, merges_file = tok.model.save(str(directory))
    vocab = json.loads(Path(vocab_file).read_text(encoding="utf-8"))
    vocab.update({BOS: len(vocab), EOS: len(vocab) + 1})
    Path(vocab_file).write_text(json.dumps(vocab), encoding="utf-8")
    tok.model = models.BPE.from_file(vocab_file, merges_file, unk_token=EOS)
    tok.add_special_tokens([BOS, EOS])
    bos, eos = tok.token_to_id(BOS), tok.token_to_id(EOS)
    tok.post_processor = processors.TemplateProcessing(single=f"{BOS} $A {EOS}", special_tokens=[(BOS, bos),
                                                                                                  (EOS, eos)])
    tok.save(str(directory / "tokenizer.json"))
    return int(tok.get_vocab_size())


def build_tiny_clip(directory: Path, seed: int = 0, projection_dim: int = 16) -> Path:
    """Write config.json, model.safetensors and tokenizer.json of a 2-layer CLIP (224 px images, 32 px patches)."""
    import torch
    import transformers

    directory.mkdir(parents=True, exist_ok=True)
    vocab = build_tokenizer(directory)
    torch.manual_seed(seed)
    text = {"vocab_size": vocab, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 2, "max_position_embeddings": 77, "bos_token_id": vocab - 2, "eos_token_id": 2,
            "pad_token_id": 1, "hidden_act": "quick_gelu"}
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
              "image_size": 224, "patch_size": 32, "hidden_act": "quick_gelu"}
    config = transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection_dim)
    transformers.CLIPModel(config).eval().save_pretrained(str(directory), safe_serialization=True)
    return directory
