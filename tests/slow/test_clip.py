"""CLIP on a tiny random-weight model: conformance with transformers' CLIPModel, indexing and searching images from
the CLI, the library and the server; the real-weight test runs only where openai/clip-vit-base-patch32 is present."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from m3search.ingest.images import index_images
from m3search.ingest.sources import read_images
from m3search.models.encoders.clip import ClipEncoder
from m3search.models.encoders.loader import load_encoder
from m3search.models.registry import get_spec
from m3search.models.resolve import find_local, register_dir
from m3search.retrieval.search import Searcher
from m3search.retrieval.types import SearchRequest
from m3search.server.app import create_app
from m3search.settings import Settings, get_settings
from m3search.store.sqlite import SQLiteStore
from tests.references import import_or_skip
from tests.tiny_clip import BOS, EOS
from tests.unit.test_cli import run

pytestmark = pytest.mark.slow
PIL = import_or_skip("PIL.Image", "the 'images' extra (Pillow) is not installed")
data = import_or_skip("skimage.data", "scikit-image (dev) is not installed")
SAMPLES = {"astronaut.jpg": data.astronaut, "coffee.png": data.coffee, "sub/chelsea.webp": data.chelsea,
           "camera.bmp": data.camera, "rocket.gif": data.rocket}


@pytest.fixture
def clip(tiny_clip_dir: Path, settings: Settings) -> ClipEncoder:
    encoder = load_encoder("clip-vit-b-32", path=tiny_clip_dir, precision="fp32", settings=settings)
    assert isinstance(encoder, ClipEncoder)
    return encoder


@pytest.fixture
def own_home(tiny_clip_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """A home of this test's own, where the tiny CLIP is registered as 'clip-vit-b-32' (as a user's copy would be):
    the shared home stays without CLIP, so the real-weight test does not mistake the tiny model for the real one."""
    home = tmp_path / "home"
    monkeypatch.setenv("M3SEARCH_HOME", str(home))
    settings = get_settings(home=home, threads=2)
    register_dir(settings, "clip-vit-b-32", tiny_clip_dir)
    return settings


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """The scikit-image samples as files of five formats, one in a sub-directory."""
    root = tmp_path / "photos"
    for name, load in SAMPLES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        PIL.fromarray(load()).save(root / name)
    return root


def variant(array: np.ndarray, path: Path) -> Path:
    """The image cropped (a 5% border off) and shrunk to 70%: a different file showing the same thing. (A random-weight
    ViT is not robust to much larger crops: with a 10% border, one sample's copy ranks second.)"""
    height, width = array.shape[:2]
    image = PIL.fromarray(array[height // 20 : -height // 20, width // 20 : -width // 20])
    image.resize((int(image.width * 0.7), int(image.height * 0.7))).save(path)
    return path


def reference_text(model: Any, tokenizer_file: Path, texts: list[str]) -> np.ndarray:
    import torch
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_file))
    ids = [e.ids if len(e.ids) <= 77 else [*e.ids[:76], e.ids[-1]] for e in tok.encode_batch(texts)]
    width, eos = max(map(len, ids)), tok.token_to_id(EOS)
    input_ids = torch.tensor([row + [eos] * (width - len(row)) for row in ids])
    mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in ids])
    with torch.no_grad():
        out = model.get_text_features(input_ids=input_ids, attention_mask=mask)
    out = getattr(out, "pooler_output", out)  # transformers 5 wraps the projected features, transformers 4 does not
    return torch.nn.functional.normalize(out, dim=-1).numpy()  # type: ignore[no-any-return]


@pytest.mark.conformance
def test_towers_equal_transformers_clip(clip: ClipEncoder, tiny_clip_dir: Path) -> None:
    import torch
    import transformers

    assert clip.prepared.manifest["builder"] == "m3search"  # the torch-free graphs (the exporter is the fallback)
    model = transformers.CLIPModel.from_pretrained(str(tiny_clip_dir)).eval()
    texts = ["a photo of a cat", "An astronaut, in SPACE!", "coffee " * 120, "x"]  # one cut at 77 tokens
    ours = np.stack([e.dense for e in clip.encode_queries(texts)])
    assert ours.shape == (4, 16)
    assert np.abs(ours - reference_text(model, tiny_clip_dir / "tokenizer.json", texts)).max() < 1e-4
    assert clip.encode_queries(texts)[2].truncated
    arrays = [load() for load in SAMPLES.values()]
    ours = np.stack([e.dense for e in clip.encode_images(arrays)])
    pixels = transformers.CLIPImageProcessor()(images=[PIL.fromarray(a) for a in arrays], return_tensors="pt")
    with torch.no_grad():
        reference = model.get_image_features(pixel_values=pixels["pixel_values"])
    reference = getattr(reference, "pooler_output", reference)
    reference = torch.nn.functional.normalize(reference, dim=-1).numpy()
    assert np.abs(ours - reference).max() < 1e-4
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    clip.image_batch = 2  # batching changes nothing
    again = np.stack([e.dense for e in clip.encode_images(arrays)])
    assert np.abs(again - ours).max() < 1e-5



@pytest.mark.parametrize("backend", ["openvino", "auto"])
def test_the_vision_tower_follows_the_encoders_backend(clip: ClipEncoder, tiny_clip_dir: Path, tmp_path: Path,
                                                       backend: str) -> None:
    """OpenVINO runs both towers; with "auto" the text tower's measured choice is the vision tower's too."""
    arrays = [load() for load in SAMPLES.values()]
    reference = np.stack([e.dense for e in clip.encode_images(arrays)])
    encoder = load_encoder("clip-vit-b-32", path=tiny_clip_dir, precision="fp32", backend=backend,
                           settings=get_settings(home=tmp_path / "home", threads=2))
    assert isinstance(encoder, ClipEncoder)
    vectors = np.stack([e.dense for e in encoder.encode_images(arrays)])
    assert np.abs(vectors - reference).max() < 1e-4
    assert encoder.backend in ("onnxruntime", "openvino")
    expected = {"onnxruntime": "OrtSession", "openvino": "OpenVinoSession"}[encoder.backend]
    assert type(encoder.vision_session).__name__ == expected

def test_library_index_and_both_searches(clip: ClipEncoder, photos: Path, tmp_path: Path) -> None:
    sources = read_images([photos])
    with SQLiteStore(tmp_path / "db.sqlite3") as store:
        report = index_images(store, clip, "photos", sources.documents)
        assert (report.added, report.chunks) == (5, 5)
        assert index_images(store, clip, "photos", read_images([photos]).documents).unchanged == 5
        searcher = Searcher(store, clip)
        for name, load in SAMPLES.items():
            query = variant(load(), tmp_path / f"query-{Path(name).stem}.png")
            result = searcher.search_image("photos", query, SearchRequest(strategy="dense", k=5))
            assert result.hits[0].document_id == name, (name, [h.document_id for h in result.hits])
            assert result.hits[0].score > result.hits[1].score
        hits = searcher.search("photos", "a photo of a cat", SearchRequest(strategy="dense", k=5)).hits
        assert sorted(h.document_id for h in hits) == sorted(SAMPLES)
        chelsea = next(h for h in hits if h.document_id == "sub/chelsea.webp")
        assert chelsea.metadata == {"width": 451, "height": 300, "format": "webp"}
        filtered = searcher.search("photos", "anything", SearchRequest(strategy="dense", filters={"format": "png"}))
        assert [h.document_id for h in filtered.hits] == ["coffee.png"]


def test_cli_index_and_search(own_home: Settings, photos: Path, tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "db.sqlite3")
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    args = ["index", str(photos), "-c", "photos", "--model", "clip-vit-b-32", "--db", db, "-p", "fp32", "--json"]
    code, out, _ = run(args, capsys)
    report = json.loads(out)
    assert code == 1 and report["added"] == 5  # the broken file is skipped, named, and the run says so
    assert [p["source"] for p in report["problems"]] == [str(photos / "broken.jpg")]
    query = variant(data.chelsea(), tmp_path / "cat.png")
    code, out, _ = run(["search", "--image", str(query), "-c", "photos", "--db", db, "-p", "fp32", "--json"], capsys)
    result = json.loads(out)
    assert code == 0 and result["strategy"] == "dense" and result["hits"][0]["document_id"] == "sub/chelsea.webp"
    code, out, _ = run(["search", "a cat", "-c", "photos", "-s", "dense", "--db", db, "-p", "fp32", "--json"], capsys)
    assert code == 0 and len(json.loads(out)["hits"]) == 5
    code, _, err = run(["search", "a cat", "-c", "photos", "-s", "sparse", "--db", db, "-p", "fp32"], capsys)
    assert code == 2 and "needs sparse vectors" in err and "clip-vit-b-32" in err
    notes = tmp_path / "notes.txt"
    notes.write_text("some text")
    code, out, err = run(["index", str(notes), "-c", "photos", "--model", "clip-vit-b-32", "--db", db], capsys)
    assert code == 2 and "not an image" in out and "no images to index" in err
    code, _, err = run(["index", str(notes), "-c", "photos", "--model", "hash", "--db", db], capsys)
    assert code == 2 and "holds vectors of clip-vit-b-32" in err  # a text model never writes into it
    code, _, err = run(["reembed", "-c", "photos", "--model", "hash", "--db", db], capsys)
    assert code == 2 and "cannot be re-embedded" in err


def test_server_text_and_image_search(own_home: Settings, photos: Path, tmp_path: Path) -> None:
    settings = own_home
    encoder = load_encoder("clip-vit-b-32", precision="fp32", settings=settings)
    with SQLiteStore(tmp_path / "db.sqlite3") as store:
        index_images(store, encoder, "photos", read_images([photos]).documents)
    app = create_app(settings, model="clip-vit-b-32", db=tmp_path / "db.sqlite3", preload=False)
    buffer = io.BytesIO()
    PIL.open(variant(data.coffee(), tmp_path / "cup.png")).save(buffer, "PNG")
    image = base64.b64encode(buffer.getvalue()).decode()
    with TestClient(app, raise_server_exceptions=False) as client:
        found = client.post("/api/v1/search/image", json={"image": image, "collection": "photos", "k": 3})
        assert found.status_code == 200, found.text
        assert found.json()["hits"][0]["document_id"] == "coffee.png"
        data_url = client.post("/api/v1/search/image", json={"image": f"data:image/png;base64,{image}",
                                                             "collection": "photos"})
        assert data_url.json()["hits"][0]["document_id"] == "coffee.png"
        text = client.post("/api/v1/search", json={"q": "a cup of coffee", "collection": "photos",
                                                    "strategy": "dense", "k": 5})
        assert text.status_code == 200 and len(text.json()["hits"]) == 5
        bad = client.post("/api/v1/search/image", json={"image": "not base64!", "collection": "photos"})
        assert bad.status_code == 400 and "base64" in bad.json()["error"]["message"]
        junk = base64.b64encode(b"plain text, not an image").decode()
        bad = client.post("/api/v1/search/image", json={"image": junk, "collection": "photos"})
        assert bad.status_code == 400 and "not an image" in bad.json()["error"]["message"]


@pytest.mark.needs_weights
def test_real_clip_finds_the_cat(settings: Settings, photos: Path, tmp_path: Path) -> None:
    found = find_local(get_spec("clip-vit-b-32"), settings)
    if found is None or json.loads((found.path / "config.json").read_text()).get("projection_dim") != 512:
        pytest.skip("openai/clip-vit-base-patch32 is not available offline here (m3search models pull clip-vit-b-32)")
    encoder = load_encoder("clip-vit-b-32", precision="fp32", settings=settings)
    with SQLiteStore(tmp_path / "db.sqlite3") as store:
        index_images(store, encoder, "photos", read_images([photos]).documents)
        searcher = Searcher(store, encoder)
        for query, expected in (("a photo of a cat", "sub/chelsea.webp"), ("a cup of coffee", "coffee.png"),
                                ("an astronaut", "astronaut.jpg")):
            hits = searcher.search("photos", query, SearchRequest(strategy="dense", k=5)).hits
            assert hits[0].document_id == expected, (query, [h.document_id for h in hits])


def test_qdrant_edge_image_collection(clip: ClipEncoder, settings: Settings, photos: Path, tmp_path: Path) -> None:
    import_or_skip("qdrant_edge", "qdrant-edge-py is in the dev extra")
    from m3search.store.urls import configured_store

    with configured_store(settings, url=f"qdrant+edge:///{tmp_path}/edge") as store:
        assert index_images(store, clip, "photos", read_images([photos]).documents).added == 5
        searcher = Searcher(store, clip)
        query = variant(data.chelsea(), tmp_path / "cat.png")
        assert searcher.search_image("photos", query).hits[0].document_id == "sub/chelsea.webp"
        hits = searcher.search("photos", "a cat", SearchRequest(strategy="dense", k=5)).hits
        assert sorted(h.document_id for h in hits) == sorted(SAMPLES)


@pytest.mark.conformance
def test_images_equal_sentence_transformers_clip(clip: ClipEncoder, tiny_clip_dir: Path, tmp_path: Path) -> None:
    """sentence-transformers' CLIP wrapper on the same weights (its processor saved beside them) gives our image
    vectors. Texts are compared with transformers above: the wrapper's tokenizer is rebuilt from vocab.json and
    merges.txt with CLIP's own pipeline, which the tiny test vocabulary does not follow."""
    import shutil
    import warnings

    reason = "sentence-transformers (the 'reference' extra) is not installed"
    st = import_or_skip("sentence_transformers", reason)
    st_models = import_or_skip("sentence_transformers.models", reason)
    transformers = import_or_skip("transformers", "the 'export' extra (transformers) is not installed")
    directory = shutil.copytree(tiny_clip_dir, tmp_path / "st-clip")
    tokenizer = transformers.CLIPTokenizerFast(  # from vocab and merges: transformers 4 refuses the tokenizer.json
        vocab_file=str(directory / "vocab.json"), merges_file=str(directory / "merges.txt"), bos_token=BOS,
        eos_token=EOS, pad_token=EOS, unk_token=EOS)
    transformers.CLIPProcessor(image_processor=transformers.CLIPImageProcessor(),
                               tokenizer=tokenizer).save_pretrained(str(directory))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the wrapper is deprecated upstream; it is still the reference users know
        model = st.SentenceTransformer(modules=[st_models.CLIPModel(str(directory))], device="cpu")
    arrays = [load() for load in SAMPLES.values()]
    theirs = model.encode([PIL.fromarray(a).convert("RGB") for a in arrays], normalize_embeddings=True)
    ours = np.stack([e.dense for e in clip.encode_images(arrays)])
    assert np.abs(ours - theirs).max() < 1e-4
