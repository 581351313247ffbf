"""The OpenAI-compatible chat client: request shape, answers, and every failure as a typed LLMError."""

from __future__ import annotations

import pytest

from m3search.errors import ConfigError, LLMError
from m3search.llm import ChatEndpoint, chat
from tests.fake_llm import fake_llm
from tests.live import free_port


def test_chat_sends_model_messages_and_key_and_returns_the_text() -> None:
    with fake_llm(lambda messages: "echo: " + messages[-1]["content"]) as llm:
        endpoint = ChatEndpoint(llm.url, "tiny", api_key="sk-secret", timeout=5)
        answer = chat(endpoint, [{"role": "user", "content": "hello"}], max_tokens=7)
    assert answer == "echo: hello"
    (request,) = llm.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["body"]["model"] == "tiny" and request["body"]["max_tokens"] == 7
    assert request["authorization"] == "Bearer sk-secret"
    assert "sk-secret" not in repr(endpoint)


def test_full_completions_url_is_used_as_is() -> None:
    with fake_llm(lambda messages: "ok") as llm:
        assert chat(ChatEndpoint(llm.url + "/chat/completions", "m"), [{"role": "user", "content": "x"}]) == "ok"


def test_timeout_http_error_and_unreachable_are_llm_errors() -> None:
    with fake_llm(lambda messages: "late", delay=1.0) as llm, pytest.raises(LLMError, match=r"within 0\.2 s"):
        chat(ChatEndpoint(llm.url, "m", timeout=0.2), [{"role": "user", "content": "x"}])
    with fake_llm(lambda messages: "x", status=500) as llm, pytest.raises(LLMError, match="HTTP 500"):
        chat(ChatEndpoint(llm.url, "m"), [{"role": "user", "content": "x"}])
    with pytest.raises(LLMError, match="unreachable"):
        chat(ChatEndpoint(f"http://127.0.0.1:{free_port()}/v1", "m", timeout=2), [{"role": "user", "content": "x"}])


@pytest.mark.parametrize(("url", "model", "timeout"), [("ftp://x", "m", 1.0), ("http://x", "", 1.0),
                                                        ("http://x", "m", 0.0)])
def test_bad_endpoint_settings_are_config_errors(url: str, model: str, timeout: float) -> None:
    with pytest.raises(ConfigError):
        ChatEndpoint(url, model, timeout=timeout)
