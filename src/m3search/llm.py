"""A small client for OpenAI-compatible chat endpoints (a local Ollama, llama.cpp, vLLM, OpenAI itself).

Used by LLM reranking and LLM query generation; both are off unless an endpoint is given. Needs the ``llm`` extra.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from m3search._optional import require
from m3search.errors import ConfigError, LLMError
from m3search.settings import Settings


@dataclass(frozen=True)
class ChatEndpoint:
    """Where and how to call a chat model.

    Attributes:
        url: the base URL (``http://127.0.0.1:11434/v1``) or the full ``.../chat/completions`` URL.
        model: the model name the endpoint expects (``llama3.2``, ``gpt-4o-mini``).
        api_key: sent as a bearer token when set (never logged).
        timeout: seconds for the whole request (connect + answer).
    """

    url: str
    model: str
    api_key: str | None = None
    timeout: float = 30.0

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ConfigError(f"LLM endpoint must be an http(s) URL, not {self.url!r}")
        if not self.model:
            raise ConfigError("an LLM endpoint needs a model name (e.g. --llm-model llama3.2)")
        if not self.timeout > 0:
            raise ConfigError(f"LLM timeout must be positive, not {self.timeout}")

    @property
    def completions_url(self) -> str:
        base = self.url.rstrip("/")
        return base if base.endswith("/chat/completions") else f"{base}/chat/completions"

    def __repr__(self) -> str:  # keeps the key out of logs and error messages
        return f"ChatEndpoint(url={self.url!r}, model={self.model!r}, timeout={self.timeout})"


def configured_endpoint(settings: Settings, purpose: str, *, model: str | None = None,
                        cli_how: str = "", http_how: str = "") -> ChatEndpoint:
    """The endpoint of ``M3SEARCH_LLM_URL`` / ``_MODEL`` (``model`` overrides the latter), ``_API_KEY`` and
    ``_TIMEOUT``; a ConfigError saying what ``purpose`` needs when none is configured (``cli_how``, ``http_how``: the
    command line's or an HTTP client's other ways)."""
    chosen = model or settings.llm_model
    if not settings.llm_url or not chosen:
        example = ", e.g. http://127.0.0.1:11434/v1 and llama3.2"
        raise ConfigError.explained(f"{purpose} needs an endpoint",
                                    f": set M3SEARCH_LLM_URL and M3SEARCH_LLM_MODEL{example}",
                                    cli=f": set M3SEARCH_LLM_URL and M3SEARCH_LLM_MODEL{cli_how}{example}",
                                    http=f": the server's operator sets M3SEARCH_LLM_URL and M3SEARCH_LLM_MODEL"
                                         f"{http_how}")
    key = settings.llm_api_key.get_secret_value() if settings.llm_api_key is not None else None
    return ChatEndpoint(settings.llm_url, chosen, key, settings.llm_timeout)


def chat(endpoint: ChatEndpoint, messages: list[dict[str, str]], *, temperature: float = 0.0,
         max_tokens: int | None = None) -> str:
    """Send ``messages`` and return the first choice's text.

    Raises:
        LLMError: the endpoint is unreachable, times out, answers non-2xx or without a message.
        MissingDependencyError: the ``llm`` extra (httpx) is not installed.
    """
    httpx = require("httpx", "llm", "Calling an LLM endpoint")
    body: dict[str, Any] = {"model": endpoint.model, "messages": messages, "temperature": temperature,
                            "stream": False}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    headers = {"Authorization": f"Bearer {endpoint.api_key}"} if endpoint.api_key else {}
    try:
        response = httpx.post(endpoint.completions_url, json=body, headers=headers, timeout=endpoint.timeout)
    except httpx.TimeoutException as exc:
        raise LLMError(f"LLM endpoint {endpoint.url} did not answer within {endpoint.timeout:g} s") from exc
    except httpx.HTTPError as exc:
        raise LLMError(f"LLM endpoint {endpoint.url} is unreachable ({type(exc).__name__}); "
                       f"start it or fix the URL") from exc
    if response.status_code >= 400:
        raise LLMError(f"LLM endpoint {endpoint.url} answered HTTP {response.status_code}: {response.text[:200]}")
    try:
        content = response.json()["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise LLMError(f"LLM endpoint {endpoint.url} answered without a chat message") from exc
    if not isinstance(content, str):
        raise LLMError(f"LLM endpoint {endpoint.url} answered a non-text message")
    return content
