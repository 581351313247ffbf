"""First use without torch: preparing and encoding never imports torch or transformers.

Each check runs in a fresh process with a fresh M3SEARCH_HOME and an import hook that makes ``torch`` and
``transformers`` unimportable, as on a machine where only ``pip install m3search`` ran.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import m3search

pytestmark = pytest.mark.slow

_BLOCK = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'transformers'):
            raise ImportError(f'{name} is blocked: m3search must not need it here')
        return None
sys.meta_path.insert(0, Block())
"""


def run_without_torch(code: str, home: Path) -> dict[str, object]:
    source = str(Path(m3search.__file__).parents[1])  # the m3search under test, not whichever one is installed
    env = {"M3SEARCH_HOME": str(home), "M3SEARCH_BACKEND": "onnxruntime", "HF_HUB_OFFLINE": "1",
           "PATH": "/usr/bin:/bin", "PYTHONPATH": source}
    out = subprocess.run([sys.executable, "-c", _BLOCK + code], capture_output=True, text=True, timeout=600,
                         env=env, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_embedding_models_prepare_and_encode_without_torch(tmp_path: Path, tiny_m3_dir: Path) -> None:
    code = f"""
import json, sys, m3search
from pathlib import Path
dense = m3search.load_encoder('all-minilm-l6-v2', precision='int8').encode(['a first use'])[0].dense
sparse = m3search.load_encoder('splade-tiny', precision='fp32').encode(['a first use'])[0].sparse
m3 = m3search.load_encoder('bge-m3', path=Path({str(tiny_m3_dir)!r}), precision='int8')
out = m3.encode(['a first use'], outputs=['dense', 'sparse', 'colbert'])[0]
print(json.dumps({{'dim': int(dense.shape[0]), 'sparse': int(sparse.indices.size), 'colbert': out.colbert.shape[0],
                  'torch': 'torch' in sys.modules, 'transformers': 'transformers' in sys.modules}}))
"""
    result = run_without_torch(code, tmp_path / "home")
    assert result == {"dim": 384, "sparse": result["sparse"], "colbert": result["colbert"], "torch": False,
                      "transformers": False}
    assert int(result["sparse"]) > 0 and int(result["colbert"]) > 0  # type: ignore[call-overload]


def test_clip_prepares_and_embeds_texts_and_images_without_torch(tmp_path: Path, tiny_clip_dir: Path) -> None:
    code = f"""
import json, sys, numpy as np, m3search
from pathlib import Path
clip = m3search.load_encoder('clip-vit-b-32', path=Path({str(tiny_clip_dir)!r}), precision='int8')
texts = clip.encode(['a photo of a cat', 'an astronaut'])
pixels = np.random.default_rng(0).integers(0, 255, size=(2, 40, 60, 3), dtype=np.uint8)
images = clip.encode_images(list(pixels))
manifest = clip.prepared.manifest
print(json.dumps({{'texts': [float(np.linalg.norm(e.dense)) for e in texts],
                  'images': [float(np.linalg.norm(e.dense)) for e in images],
                  'builder': manifest['builder'],
                  'vision': (clip.prepared.directory / manifest['vision']['file']).is_file(),
                  'torch': 'torch' in sys.modules, 'transformers': 'transformers' in sys.modules}}))
"""
    result = run_without_torch(code, tmp_path / "home")
    assert result["builder"] == "m3search" and result["vision"] is True
    assert (result["torch"], result["transformers"]) == (False, False)
    norms = [*result["texts"], *result["images"]]  # type: ignore[misc]
    assert len(norms) == 4 and np.allclose(norms, 1.0, atol=1e-5)
