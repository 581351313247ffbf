"""Images: preprocessing equal to transformers' CLIPImageProcessor, decoding errors, image documents, refusals."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest

from m3search.errors import ConfigError, ImageError, InputError
from m3search.ingest.images import index_images
from m3search.ingest.pipeline import index_documents
from m3search.ingest.sources import read_images
from m3search.models.encoders import images
from m3search.models.encoders.hashing import HashEncoder
from m3search.models.registry import ImageFacts, ModelSpec, get_spec, is_image_model
from m3search.retrieval.search import Searcher
from m3search.retrieval.types import SearchRequest
from m3search.store.sqlite import SQLiteStore
from m3search.store.types import Document
from tests.references import import_or_skip
from tests.unit.test_cli import run

PIL = import_or_skip("PIL.Image", "the 'images' extra (Pillow) is not installed")
data = import_or_skip("skimage.data", "scikit-image (dev) is not installed")
FACTS = get_spec("clip-vit-b-32").image


def encoded(array: np.ndarray, kind: str = "PNG", **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    PIL.fromarray(array).save(buffer, kind, **kwargs)
    return buffer.getvalue()


def rgba() -> np.ndarray:
    alpha = (np.arange(512 * 512).reshape(512, 512) % 251).astype(np.uint8)
    return np.dstack([data.astronaut(), alpha])


SAMPLES = {"astronaut": data.astronaut, "coffee": data.coffee, "chelsea": data.chelsea, "camera": data.camera}


@pytest.fixture(scope="module")
def processor() -> object:
    transformers = import_or_skip("transformers", "the 'export' extra (transformers) is not installed")
    return transformers.CLIPImageProcessor()


@pytest.mark.conformance
@pytest.mark.parametrize("name", [*SAMPLES, "rgba-png", "palette-gif"])
def test_pixel_values_equal_clip_image_processor(name: str, processor: object) -> None:
    if name == "rgba-png":
        raw = encoded(rgba())
    elif name == "palette-gif":
        raw = encoded(data.coffee(), "GIF")  # palette mode, decoded from the file
    else:
        raw = encoded(SAMPLES[name]())
    assert FACTS is not None
    ours = images.pixel_values(images.open_image(raw, name=name), FACTS)
    image = PIL.open(io.BytesIO(raw))
    if name == "rgba-png":  # transformers 5 composites transparency onto white, transformers 4 drops it: done here
        image = PIL.alpha_composite(PIL.new("RGBA", image.size, (255, 255, 255, 255)), image.convert("RGBA"))
    reference = processor(images=image.convert("RGB"), return_tensors="np")["pixel_values"][0]  # type: ignore[operator]
    assert ours.shape == reference.shape == (3, 224, 224)
    assert ours.dtype == np.float32
    assert np.abs(ours - reference).max() <= 1e-5


def test_arrays_and_grayscale_become_rgb() -> None:
    gray = images.from_array(data.camera())
    assert gray.mode == "RGB" and gray.size == (512, 512)
    assert images.from_array(rgba()).mode == "RGB"
    with pytest.raises(ImageError, match="uint8"):
        images.from_array(data.camera().astype(np.float32))


@pytest.mark.parametrize(("width", "height", "expected"), [(512, 512, (224, 224)), (600, 400, (336, 224)),
                                                            (451, 300, (336, 224)), (300, 451, (224, 336)),
                                                            (224, 10_000, (224, 10_000))])
def test_shortest_edge_resize_truncates_the_long_edge(width: int, height: int, expected: tuple[int, int]) -> None:
    assert images.resized_size(width, height, 224) == expected


def test_decoding_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match=r"notes\.txt: not an image"):
        images.open_image(b"just some text", name="notes.txt")
    truncated = encoded(data.astronaut(), "JPEG")[:3000]
    with pytest.raises(ImageError, match=r"cut\.jpg: truncated or corrupt"):
        images.open_image(truncated, name="cut.jpg")
    with pytest.raises(ImageError, match=r"small\.png: 64x64 pixels is more than the 100 allowed"):
        images.open_image(encoded(np.zeros((64, 64, 3), np.uint8)), name="small.png", max_pixels=100)
    # BMP headers that claim 8000 x 8000 (our limit) and 20000 x 20000 pixels (Pillow's): refused before decoding.
    header = bytearray(encoded(np.zeros((1, 1, 3), np.uint8), "BMP"))
    for side, message in ((8000, "8000x8000 pixels is more than the 50000000 allowed"), (20000, "too many pixels")):
        header[18:22] = header[22:26] = side.to_bytes(4, "little")
        with pytest.raises(ImageError, match=rf"bomb\.bmp: {message}"):
            images.open_image(bytes(header), name="bomb.bmp")
    with pytest.raises(ImageError, match=r"missing\.png: unreadable"):
        images.open_image(tmp_path / "missing.png", name="missing.png")


def test_image_documents(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    raw = encoded(data.chelsea())
    (tmp_path / "sub" / "cat.png").write_bytes(raw)
    (tmp_path / "coffee.JPG").write_bytes(encoded(data.coffee(), "JPEG"))
    (tmp_path / "broken.webp").write_bytes(b"RIFF0000WEBPnope")
    (tmp_path / "notes.md").write_text("# text")
    sources = read_images([tmp_path])
    docs = {d.doc_id: d for d in sources.documents}
    assert sorted(docs) == ["coffee.JPG", "sub/cat.png"]
    cat = docs["sub/cat.png"]
    assert cat.text == "cat.png"
    assert cat.metadata == {"width": 451, "height": 300, "format": "png"}
    assert cat.content_hash == hashlib.sha256(raw).hexdigest()
    assert docs["coffee.JPG"].metadata["format"] == "jpeg"
    reasons = {Path(p.source).name: p.reason for p in sources.problems}
    assert set(reasons) == {"broken.webp", "notes.md"}
    assert "not an image" in reasons["broken.webp"] and "text model" in reasons["notes.md"]


def test_registry_facts_and_validation() -> None:
    spec = get_spec("openai/clip-vit-base-patch32")
    assert (spec.name, spec.dim, spec.max_tokens, spec.family, spec.license) == ("clip-vit-b-32", 512, 77, "clip",
                                                                                 "MIT")
    assert spec.image == ImageFacts(224, (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
    assert len(spec.revision) == 40
    with pytest.raises(ConfigError, match="image facts"):
        ModelSpec(name="x", hf_repo="a/b", revision="0" * 40, dim=8, max_tokens=8, pooling="projection",
                  normalize=True, outputs=("dense",), family="clip", license="MIT", size_gb=0.0)


def test_one_answer_to_is_this_an_image_model() -> None:
    """Facts and registry names answer alike; a name the registry does not know (a local model) is not one."""
    assert is_image_model(get_spec("clip-vit-b-32")) and is_image_model(" CLIP-ViT-B-32 ")
    assert not is_image_model(get_spec("bge-m3")) and not is_image_model("bge-m3")
    assert not is_image_model("my-fine-tuned-model")
    assert is_image_model(clip_like().spec)


def clip_like() -> HashEncoder:
    encoder = HashEncoder(get_spec("hash"))
    encoder.spec = get_spec("clip-vit-b-32")  # a text encoder that claims to be CLIP: what the guards look at
    return encoder


def test_text_never_goes_into_an_image_collection(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "db.sqlite3") as store:
        with pytest.raises(ConfigError, match="builds image collections"):
            index_documents(store, clip_like(), "photos", [Document("a", "some text", "a.txt")])
        with pytest.raises(ConfigError, match="embeds text only"):
            index_images(store, HashEncoder(get_spec("hash")), "photos", [])
        assert store.collections() == []


def test_image_queries_need_an_image_model_and_dense(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "db.sqlite3") as store:
        searcher = Searcher(store, HashEncoder(get_spec("hash")))
        with pytest.raises(InputError, match="dense vectors only"):
            searcher.search_image("photos", b"", SearchRequest(strategy="hybrid"))
        with pytest.raises(InputError, match="cannot be reranked"):
            searcher.search_image("photos", b"", SearchRequest(strategy="dense", rerank="llm"))
        with pytest.raises(ConfigError, match="need an image model"):
            searcher.search_image("photos", b"")


def test_cli_refuses_images_for_text_models_and_bad_queries(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("M3SEARCH_HOME", str(tmp_path / "home"))
    picture = tmp_path / "cat.png"
    picture.write_bytes(encoded(data.chelsea()))
    db = str(tmp_path / "db.sqlite3")
    code, out, err = run(["index", str(picture), "-c", "texts", "--model", "hash", "--db", db], capsys)
    assert code == 2
    assert "an image; images are indexed with an image model" in out and "--model clip-vit-b-32" in out
    code, _, err = run(["search", "-c", "photos", "--db", db], capsys)
    assert code == 2 and "the query is empty" in err
    code, _, err = run(["search", "a cat", "--image", str(picture), "-c", "photos", "--db", db], capsys)
    assert code == 2 and "not both" in err
    code, out, err = run(["index", str(tmp_path / "cat.png"), str(tmp_path / "x.txt"), "-c", "photos", "--model",
                          "clip-vit-b-32", "--db", db], capsys)
    assert code == 2  # CLIP's files are not here: one line saying how to get them, and nothing is created
    assert "model 'clip-vit-b-32' is not available offline" in err and "Traceback" not in err
    code, out, err = run(["index", str(tmp_path / "x.txt"), "-c", "photos", "--model", "clip-vit-b-32", "--db", db],
                         capsys)
    assert code == 2 and "x.txt: no such file" in out and "no images to index" in err
