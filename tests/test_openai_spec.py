"""The ``openai:`` spec's own request path, and every reply schema the project sends,
against the OpenAI-compatible test server (tests/openai_server.py) and its strict-mode
checks.

``openai:gpt-4o`` always talks to https://api.openai.com/v1 (its base URL is fixed;
``OPENAI_BASE_URL`` does not move it), and it sends what a URL spec does not: its key
from ``OPENAI_API_KEY``, the token limit as ``max_completion_tokens`` alone, and
``json_schema`` structured output by default. So the test server stands in for
api.openai.com itself, the way a client behind a corporate proxy reaches it: the
client's ``HTTPS_PROXY`` is the server, which opens the ``CONNECT`` tunnel and answers
over TLS with a certificate for api.openai.com from a throwaway CA, the only one the
client trusts (``SSL_CERT_FILE``). Nothing in the product knows it is being tested."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import CLI, PACKAGE_DIRS, ROOT, cli_env, default_local, default_remote, secret_doc
from langchain_core.messages import HumanMessage, SystemMessage
from minionflow.contracts.schemas import AggregateDecision, JobOutput, MinionTurn
from minionflow.contracts.settings import ModelSpec
from minionflow.evaluation.judge import JudgeReply
from minionflow.serving.models import DefaultModelProvider
from openai_server import OpenAIServer, impersonate, strict_problems
from pydantic import BaseModel

QUESTION = "What is the secret number?"
KEY = "sk-test-minionflow-0123456789"
ASK = "Reply in json with: "  # the echo responder replies with what follows


def echo(prompt: str) -> str:
    """Replies with the JSON the prompt asks for (after ``ASK``); else as the run's fakes do."""
    return prompt.split(ASK, 1)[1] if ASK in prompt else default_remote(prompt)


@pytest.fixture
def api_openai_com(tmp_path: Path) -> Iterator[OpenAIServer]:
    """The test server as api.openai.com behind an HTTPS proxy: the supervisor
    ("gpt-4o") and the minion ("gpt-4o-mini") of the other tests, and the echo model."""
    tls = impersonate("api.openai.com", tmp_path / "tls")
    with OpenAIServer({"gpt-4o": default_remote, "gpt-4o-mini": default_local, "echo": echo}, tls=tls) as srv:
        srv.start()
        yield srv


def behind_proxy(server: OpenAIServer, environ: dict[str, str]) -> dict[str, str]:
    """``environ`` as a user behind a proxy has it: HTTPS through ``server``, which is
    trusted (and nothing else), an OpenAI key, no proxy or OpenAI URL of its own."""
    assert server.tls is not None
    own = ("SSL_CERT_DIR", "OPENAI_BASE_URL", "OPENAI_API_BASE", "OPENAI_PROXY")
    env = {k: v for k, v in environ.items() if not k.lower().endswith("_proxy") and k not in own}
    env.update(HTTPS_PROXY=f"http://127.0.0.1:{server.port}", SSL_CERT_FILE=str(server.tls.ca_file), OPENAI_API_KEY=KEY)
    return env


def chat_requests(server: OpenAIServer) -> list[dict[str, Any]]:
    return [r for r in server.received if r["path"] == "/v1/chat/completions"]


def test_a_run_with_openai_specs_sends_what_the_openai_api_takes(api_openai_com, tmp_path):
    """``minionflow run --remote openai:gpt-4o --local openai:gpt-4o-mini``, as a user
    runs it: every request reaches api.openai.com (here, through the proxy's tunnel)
    with the key from OPENAI_API_KEY; structured output is ``json_schema`` with
    ``strict: true`` for both roles, which the server's strict-mode checks take; the
    token limits go as ``max_completion_tokens`` only (no llama.cpp ``max_tokens`` or
    ``cache_prompt``); and the run answers from the server's replies."""
    doc = tmp_path / "ledger.txt"
    doc.write_text(secret_doc().text)
    done = subprocess.run([CLI, "run", str(doc), "-q", QUESTION, "--remote", "openai:gpt-4o", "--local", "openai:gpt-4o-mini",
                           "--chunk-tokens", "40", "--sandbox", "bwrap", "--remote-max-tokens", "300",
                           "--local-max-tokens", "48", "--json", "--quiet"], capture_output=True, text=True,
                          env=behind_proxy(api_openai_com, cli_env(tmp_path / "home")), timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout)
    assert out["answer"] == "42" and out["sandbox"] == "bwrap", out
    assert out["usage"]["local"]["calls"] == 12 and out["usage"]["remote"]["calls"] == 2
    assert api_openai_com.rejected == []
    # nothing came to the port but through the tunnel to api.openai.com, each with the key
    assert {r["tunnel"] for r in api_openai_com.received if r["method"] != "CONNECT"} == {"api.openai.com:443"}
    assert {(r["host"], r["authorization"]) for r in chat_requests(api_openai_com)} == {("api.openai.com", f"Bearer {KEY}")}
    bodies = api_openai_com.requests
    assert len(chat_requests(api_openai_com)) == len(bodies) == 14
    remote = [b for b in bodies if b["model"] == "gpt-4o"]
    local = [b for b in bodies if b["model"] == "gpt-4o-mini"]
    # the supervisor's code (plain text), then its verdict; one job per paragraph
    assert ["response_format" in b for b in remote] == [False, True] and len(local) == 12
    for body in remote[1:] + local:
        spec = body["response_format"]["json_schema"]
        assert body["response_format"]["type"] == "json_schema" and "tools" not in body
        assert spec["strict"] is True and strict_problems(spec["schema"]) == []
        assert spec["name"] == ("AggregateDecision" if body["model"] == "gpt-4o" else "JobOutput")
    limits = {(b["model"], b.get("max_completion_tokens"), "max_tokens" in b, "cache_prompt" in b) for b in bodies}
    assert limits == {("gpt-4o", 300, False, False), ("gpt-4o-mini", 48, False, False)}
    # the minions' replies were parsed: the supervisor read the one answer among twelve jobs
    verdict = remote[1]["messages"][-1]["content"]
    assert "12 jobs ran: 1 useful answers" in verdict and "0 failed" in verdict and "answer: 42" in verdict, verdict


# -- every reply schema the project sends ---------------------------------------------

REPLY_EXAMPLES: dict[type[BaseModel], BaseModel] = {
    JobOutput: JobOutput(citation="The secret number is 42.", answer="42", explanation="the text says so"),
    AggregateDecision: AggregateDecision(decision="provide_final_answer", answer="42", explanation="from the minions",
                                         feedback=None, scratchpad=None),
    MinionTurn: MinionTurn(decision="request_additional_info", answer=None, message="What is the secret number?"),
    JudgeReply: JudgeReply(correct=True, reason="it matches"),
}


def reply_models_in_the_product() -> set[str]:
    """The class of every ``client.structured(CLASS, ...)`` call in the product's code."""
    return {name for folder in PACKAGE_DIRS for path in (ROOT / folder).rglob("*.py")
            for name in re.findall(r"\.structured\(\s*([A-Za-z_]\w*)\s*,", path.read_text())}


def test_the_reply_schemas_are_every_one_the_product_sends():
    """The next test covers every reply model the product asks a model for: a new
    ``client.structured(NewModel, ...)`` call fails here until it has an example."""
    found = reply_models_in_the_product()
    assert len(found) >= 4 and found == {model.__name__ for model in REPLY_EXAMPLES}


@pytest.mark.parametrize("spec", ["openai:echo", "echo@URL;structured=json_schema", "echo@URL;structured=function_calling"])
def test_every_reply_schema_is_taken_by_the_openai_api_checks(api_openai_com, monkeypatch, spec):
    """Each reply model, as the product's client sends it over the ``openai:`` spec
    (through the proxy, as api.openai.com) and over a URL spec with each
    structured-output method: the server takes the request (strict mode's rules hold
    for every ``json_schema``) and the client parses the reply back to the example."""
    if spec.startswith("openai:"):
        env = behind_proxy(api_openai_com, dict(os.environ))
        for name in set(os.environ) - set(env):
            monkeypatch.delenv(name)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
    url = f"http://127.0.0.1:{api_openai_com.port}/v1"
    # a timeout no other test uses: LangChain keeps one HTTP client per base URL and
    # timeout, made with the proxy settings of its time
    provider = DefaultModelProvider(timeout_s=123.25)
    client = provider.client(ModelSpec.parse(spec.replace("URL", url)), "remote", 256)
    for model, example in REPLY_EXAMPLES.items():
        reply = client.structured(model, [SystemMessage("Reply in JSON."), HumanMessage(ASK + example.model_dump_json())])
        assert reply.error is None and reply.parsed == example, (model.__name__, reply.error)
    assert api_openai_com.rejected == []
    bodies = api_openai_com.requests
    assert len(bodies) == len(REPLY_EXAMPLES)
    for model, body in zip(REPLY_EXAMPLES, bodies, strict=True):
        if spec.endswith("function_calling"):
            assert body["tool_choice"]["function"]["name"] == body["tools"][0]["function"]["name"] == model.__name__
        else:
            schema = body["response_format"]["json_schema"]
            assert (schema["name"], schema["strict"], strict_problems(schema["schema"])) == (model.__name__, True, [])
    came = {(r["tunnel"], r["host"], r["authorization"]) for r in chat_requests(api_openai_com)}
    if spec.startswith("openai:"):
        assert came == {("api.openai.com:443", "api.openai.com", f"Bearer {KEY}")}
    else:
        assert came == {(None, f"127.0.0.1:{api_openai_com.port}", "Bearer not-needed")}
