"""The one error hierarchy of m3search.

Every message says what went wrong and how to fix it, in the caller's vocabulary: ``str(error)`` (and
``error.message("python")``) names Python arguments, ``error.message("cli")`` command-line flags and commands,
``error.message("http")`` JSON fields and routes (never a CLI command). The CLI turns these into one line on stderr
and exit code 2; the HTTP server into 4xx JSON. Nothing else in the code base catches broad exceptions.
"""

from __future__ import annotations

from typing import Literal, Self

Audience = Literal["python", "cli", "http"]


class M3SearchError(Exception):
    """Base of every error m3search raises on purpose."""

    _what: str = ""
    _fixes: dict[str, str] = {}  # noqa: RUF012 (replaced per instance by set_message, never mutated)

    def message(self, audience: Audience = "python") -> str:
        """The message for a Python caller, the command line or an HTTP client (see the module's docstring)."""
        fix = self._fixes.get(audience)
        return str(self) if fix is None else self._what + fix

    @classmethod
    def explained(cls, what: str, python: str, *, cli: str | None = None, http: str | None = None) -> Self:
        """An error of this class (one whose constructor takes a message) with a fix per audience."""
        error = cls()
        error.set_message(what, python, cli=cli, http=http)
        return error

    def set_message(self, what: str, python: str, *, cli: str | None = None, http: str | None = None) -> None:
        """Set the message: ``what`` went wrong, then the fix for each audience (default: the Python one)."""
        self._what = what
        self._fixes = {"python": python, "cli": python if cli is None else cli,
                       "http": python if http is None else http}
        self.args = (what + python,)


class ConfigError(M3SearchError):
    """A setting or argument has a value m3search cannot use."""


class MissingDependencyError(M3SearchError, ImportError):
    """An optional dependency is not installed; the message names the extra that provides it."""

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        super().__init__(
            f"{purpose} needs the Python package '{package}', which is not installed: "
            f"pip install 'm3search[{extra}]'"
        )
        self.package = package
        self.extra = extra


class ModelError(M3SearchError):
    """Base of errors about models."""


class UnknownModelError(ModelError):
    """The model name is not in the registry."""

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__()
        self.set_message(
            f"unknown model '{name}'; known models: {', '.join(known)}",
            " (see 'm3search models list', or pass a directory with --model-path)",
            http=" (GET /v1/models lists them)")
        self.name = name


class ModelNotFoundError(ModelError):
    """No local copy of the model's files could be found and none could be downloaded."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__()
        self.set_message(
            f"model '{name}' is not available offline ({reason})",
            f"; fix: run 'm3search models pull {name}' on a machine with internet access, or "
            f"'m3search models add {name} PATH' to use files you already have",
            http="; the server's operator has to install it (or choose another model: GET /v1/models)")
        self.name = name


class ModelFormatError(ModelError):
    """A model directory or file is incomplete or corrupt."""


class FidelityError(ModelError):
    """A reduced-precision mode strays too far from fp32 on the held-out sample."""

    def __init__(self, mode: str, metric: str, value: float, threshold: float) -> None:
        self.mode, self.metric, self.value, self.threshold = mode, metric, value, threshold
        super().__init__()
        self.set_message(
            f"{mode} keeps {metric} {value:.4f} to fp32 on the held-out sample, below the threshold {threshold:.4f}",
            "; choose another precision, lower M3SEARCH_FIDELITY_THRESHOLD, or force it "
            "(force_precision=True, M3SEARCH_FORCE_PRECISION=1)",
            cli="; choose another precision, lower M3SEARCH_FIDELITY_THRESHOLD, or force it "
                "(--force-precision, M3SEARCH_FORCE_PRECISION=1)",
            http="; choose another precision, or ask the server's operator to lower the threshold")


class DimensionError(ModelError, ConfigError):
    """A requested output dimension is not one the model supports (or a vector of the wrong size)."""


class InputError(M3SearchError):
    """An input text or request is invalid."""


class ParameterError(InputError):
    """A parameter's value is out of its range; the message names it as the caller knows it: ``rerank_k`` (Python,
    HTTP) or ``--rerank-k`` (CLI; ``flag`` when the option is named otherwise)."""

    def __init__(self, name: str, problem: str, *, flag: str | None = None) -> None:
        self.name, self.problem = name, problem
        self.flag = flag or f"--{name.replace('_', '-')}"
        super().__init__(f"{name} {problem}")

    def message(self, audience: Audience = "python") -> str:
        return f"{self.flag if audience == 'cli' else self.name} {self.problem}"


class InputTooLongError(InputError):
    """An input exceeds the maximum length and the caller asked for an error instead of truncation."""

    def __init__(self, index: int, tokens: int, max_length: int) -> None:
        super().__init__()
        self.set_message(
            f"input {index} has {tokens} tokens, more than the maximum length {max_length}",
            "; shorten it, raise max_length (up to the model's max_tokens), or pass on_overflow='truncate'",
            cli="; shorten it, raise --max-length (up to the model's max tokens), or pass --on-overflow truncate",
            http='; shorten it, or send "on_overflow": "truncate" to cut it')
        self.index = index
        self.tokens = tokens
        self.max_length = max_length


class NonFiniteEmbeddingError(M3SearchError):
    """The model produced NaN or Inf for an input: nothing is returned for the batch."""

    def __init__(self, index: int, model: str) -> None:
        super().__init__()
        what = (f"model '{model}' produced a NaN/Inf vector for input {index}; the model files may be corrupt or "
                f"the quantized model unstable")
        self.set_message(
            what, f": re-run 'm3search models prepare {model} --force' or use precision='fp32'",
            cli=f": re-run 'm3search models prepare {model} --force' or use --precision fp32",
            http=" (the server's operator has to rebuild them)")
        self.index = index


class StoreError(M3SearchError):
    """The index database cannot be used as asked."""


class SchemaVersionError(StoreError):
    """The database was written by a newer m3search."""


class CollectionNotFoundError(StoreError):
    """No collection has the given name."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__()
        self.set_message(
            f"no collection named '{name}'", f"; create it with 'm3search index PATH --collection {name}'",
            http=f"; create it with an embedding set (POST /api/v1/embedding-sets "
                 f"{{\"collection\": \"{name}\", ...}}), then add documents")


class ModelMismatchError(StoreError):
    """A collection's active vectors were made by another model configuration than the one requested."""

    def __init__(self, collection: str, active: str, requested: str) -> None:
        self.collection, self.active, self.requested = collection, active, requested
        super().__init__()
        self.set_message(
            f"collection '{collection}' holds vectors of {active}, not {requested}",
            f"; switch it with 'm3search reembed --collection {collection} --model ...' or use the model it "
            f"was built with",
            http="; switch it with a new embedding set (POST /api/v1/embedding-sets) or use the model it was "
                       "built with")


class DocumentError(InputError):
    """A document cannot be indexed (empty, too large, not UTF-8, NUL bytes, duplicate id)."""

    def __init__(self, source: str, reason: str) -> None:
        self.source, self.reason = source, reason
        super().__init__(f"{source}: {reason}")


class ImageError(DocumentError):
    """An image cannot be decoded (not an image, truncated, too many pixels); the message names the file."""


class NotFoundError(M3SearchError):
    """A named resource (embedding configuration, embedding set, document) does not exist."""


class OverloadedError(M3SearchError):
    """Too much work is queued; try again after ``retry_after`` seconds."""

    def __init__(self, queued: int, retry_after: int) -> None:
        self.queued, self.retry_after = queued, retry_after
        super().__init__(f"the server is busy ({queued} requests queued); retry after {retry_after} s")


class PayloadTooLargeError(InputError):
    """A request carries more (bytes, inputs) than the server accepts."""


class LLMError(M3SearchError):
    """An OpenAI-compatible chat endpoint failed, timed out or answered something unusable."""


class RemoteError(M3SearchError):
    """A remote m3search server was unreachable, timed out, or answered an error (``status``/``code`` say which)."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code = status, code


class RemoteRequestError(RemoteError, InputError):
    """A remote m3search server refused the request as the caller's mistake (HTTP 4xx)."""
