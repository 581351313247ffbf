"""CLIP: one encoder for both towers. Texts go through the usual :class:`~m3search.models.encoders.base.Encoder` API
(so text->image search needs nothing new); images go through :meth:`ClipEncoder.encode_images`.

Both towers' vectors are L2-normalised projections into the same space, so a text vector and an image vector
compare by dot product.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from m3search.errors import ConfigError, NonFiniteEmbeddingError
from m3search.lazy import Lazy
from m3search.models.encoders import images
from m3search.models.encoders.base import Batch, BatchOutput, l2_normalize
from m3search.models.encoders.pooled import OnnxEncoder
from m3search.models.registry import ImageFacts
from m3search.models.runtime.backends import Session
from m3search.models.runtime.sessions import open_graph
from m3search.types import Embedding, FloatArray, Output

IMAGE_BATCH = 16  # images per vision-tower run: 16 x 3 x 224 x 224 float32 is about 10 MB


class ClipEncoder(OnnxEncoder):
    """CLIP's text tower through the :class:`OnnxEncoder` machinery (precision variants, fidelity checks), and its
    vision tower (fp32) for images, on the same backend; both sessions are created on first use, once, under a lock,
    by the session factory every model kind uses. With ``backend="auto"`` the text tower's choice (measured once and
    cached) is the vision tower's too."""

    image_batch = IMAGE_BATCH
    embeds_images = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._vision = Lazy(self._open_vision, self._lock)

    @property
    def image_facts(self) -> ImageFacts:
        if self.spec.image is None:
            raise ConfigError(f"model '{self.spec.name}' has no image facts: it is not an image model")
        return self.spec.image

    def encode_batch(self, batch: Batch, outputs: frozenset[Output]) -> BatchOutput:
        (embeds,) = self.run(batch)
        return BatchOutput(dense=l2_normalize(np.asarray(embeds, dtype=np.float32)))

    @property
    def vision_session(self) -> Session:
        """The vision tower's session (fp32, on the encoder's backend)."""
        return self._vision.get()

    def _open_vision(self) -> Session:
        prepared = self.prepared
        entry = prepared.manifest.get("vision")
        if not entry:
            raise ConfigError(f"the prepared files of '{self.spec.name}' in {prepared.directory} have "
                              f"no vision tower; run 'm3search models prepare {self.spec.name} --force'")
        if self.backend == "auto":
            _ = self.session  # the text tower resolves "auto" (and applies it to this encoder)
        return open_graph(self.backend, prepared.directory / str(entry["file"]), "fp32", self.threads, self.options)

    def encode_images(self, items: Sequence[images.ImageInput], *, names: Sequence[str] | None = None
                      ) -> list[Embedding]:
        """One dense, L2-normalised vector per image (paths, encoded bytes or uint8 arrays), in input order.

        Args:
            items: the images.
            names: how errors name each image (default: its path, else "image N").

        Raises:
            ImageError: an image cannot be decoded (named in the message); nothing is returned.
        """
        if isinstance(items, str | bytes) or not isinstance(items, Sequence):
            raise ConfigError("encode_images takes a list of images, not a single one")
        labels = list(names) if names is not None else [
            str(x) if not isinstance(x, bytes | np.ndarray) else f"image {i}" for i, x in enumerate(items)]
        results: list[Embedding] = []
        for start in range(0, len(items), self.image_batch):
            chunk = range(start, min(start + self.image_batch, len(items)))
            decoded = [images.load(items[i], labels[i]) for i in chunk]
            results.extend(self._embed_pixels(images.batch_pixels(decoded, self.image_facts), start))
        return results

    def _embed_pixels(self, pixels: FloatArray, offset: int) -> list[Embedding]:
        (embeds,) = self.vision_session.run(None, {"pixel_values": pixels})
        dense = l2_normalize(np.asarray(embeds, dtype=np.float32))[:, : self.dim]
        out = []
        for row, vector in enumerate(dense):
            if not np.isfinite(vector).all():
                raise NonFiniteEmbeddingError(offset + row, self.spec.name)
            out.append(Embedding(tokens=0, truncated=False, dense=np.ascontiguousarray(vector, dtype=np.float32)))
        return out
