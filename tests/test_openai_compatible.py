"""The path docs/models.md describes for real models ("Structured output across servers"):
``ChatOpenAI`` over HTTP with the ``json_schema`` structured-output method (the default for
``openai:``, ``openrouter:`` and ``ollama:``) and ``function_calling``, against a real
OpenAI-compatible server (tests/openai_server.py) that checks every request's shape as the
OpenAI API does.

A whole MinionS run goes supervisor code -> bwrap sandbox -> one job per paragraph
answered by the local model -> aggregation, with no fake chat model in the process:
the only stand-in is the server's responder, which derives replies from prompts."""

from __future__ import annotations

import json
import subprocess

import openai
import pytest
from conftest import CLI, GOOD_CODE, cli_env, secret_doc
from langchain_core.messages import HumanMessage, SystemMessage
from minionflow.contracts.schemas import JobOutput
from minionflow.contracts.settings import ModelSpec
from minionflow.graphs import RunSettings
from minionflow.graphs.run import run_minions
from minionflow.serving.models import DefaultModelProvider
from openai_server import STRICT_NOT_PERMITTED, OpenAIServer

QUESTION = "What is the secret number?"


def mode(body: dict) -> str:
    if "tools" in body:
        return "function_calling"
    return (body.get("response_format") or {}).get("type", "text")


@pytest.mark.parametrize(("remote_method", "local_method"),
                         [("json_schema", "function_calling"), ("function_calling", "json_schema")])
def test_a_minions_run_over_http_with_openai_structured_output(openai_server, tmp_path, remote_method, local_method):
    settings = RunSettings(remote=f"gpt-4o@{openai_server.url};structured={remote_method}",
                           local=f"gpt-4o-mini@{openai_server.url};structured={local_method}",
                           chunk_tokens=40, max_chunk_chars=4000, sandbox="bwrap")
    result = run_minions([secret_doc()], QUESTION, settings, checkpoint=tmp_path)
    assert result.status == "answered" and result.answer == "42", result.notes
    assert result.sandbox == "bwrap" and result.rounds == 1 and not result.fallback
    assert openai_server.rejected == []
    remote = [b for b in openai_server.requests if b["model"] == "gpt-4o"]
    local = [b for b in openai_server.requests if b["model"] == "gpt-4o-mini"]
    # the supervisor's code (plain text), then its verdict in the chosen method; one job per paragraph
    assert [mode(b) for b in remote] == ["text", remote_method]
    assert [mode(b) for b in local] == [local_method] * 12
    for body in remote + local:
        if mode(body) == "json_schema":
            assert body["response_format"]["json_schema"]["strict"] is True
        if mode(body) == "function_calling":
            assert body["tool_choice"]["function"]["name"] in ("JobOutput", "AggregateDecision")
    # the usage the server reported is what the run counted
    words = [len("\n".join(m["content"] for m in b["messages"]).split()) for b in local]
    assert result.usage.local.calls == 12 and result.usage.local.prompt_tokens == sum(words)
    assert result.usage.remote.calls == 2


def test_the_cli_runs_the_same_path_and_auto_settles_on_json_schema(openai_server, tmp_path):
    """``structured=auto`` (a URL spec's default) tries json_schema first; this server
    takes it, so no request falls back to json_object. ``--remote-max-tokens`` and
    ``--local-max-tokens`` reach every request of their role (both limit fields: this
    server is not api.openai.com)."""
    doc = tmp_path / "ledger.txt"
    doc.write_text(secret_doc().text)
    done = subprocess.run([CLI, "run", str(doc), "-q", QUESTION, "--remote", f"gpt-4o@{openai_server.url}",
                           "--local", f"gpt-4o-mini@{openai_server.url}", "--chunk-tokens", "40", "--sandbox", "bwrap",
                           "--remote-max-tokens", "300", "--local-max-tokens", "48", "--json", "--quiet"], capture_output=True, text=True, env=cli_env(tmp_path / "home"),
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout)
    assert out["answer"] == "42" and out["sandbox"] == "bwrap" and out["usage"]["local"]["calls"] == 12
    assert {mode(b) for b in openai_server.requests[1:]} == {"json_schema"} and openai_server.rejected == []
    limits = {(b["model"], b["max_tokens"], b["max_completion_tokens"]) for b in openai_server.requests}
    assert limits == {("gpt-4o", 300, 300), ("gpt-4o-mini", 48, 48)}


# -- negative controls: the server refuses what the OpenAI API refuses ----------------------

def test_a_json_object_request_with_a_schema_key_is_refused(openai_server):
    """llama.cpp's json_object-with-schema (the embedded model's method) is not the
    OpenAI API's shape: the server refuses it, and the client records the failure."""
    spec = ModelSpec.parse(f"gpt-4o-mini@{openai_server.url};structured=json_object_schema")
    client = DefaultModelProvider().client(spec, "local", 64)
    reply = client.structured(JobOutput, [SystemMessage("Answer in JSON."), HumanMessage('"""x"""')])
    assert reply.parsed is None and "response_format.schema" in (reply.error or "")
    assert openai_server.rejected == ["Unrecognized request argument supplied: response_format.schema"]


@pytest.mark.parametrize(("request_args", "message"), [
    ({"response_format": {"type": "json_object"}, "messages": [{"role": "user", "content": "hi"}]},
     "must contain the word 'json'"),
    ({"response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "object"}}}},
     "json_schema.name"),
    ({"response_format": {"type": "json_schema", "json_schema": {
        "name": "Out", "strict": True, "schema": {"type": "object", "properties": {"a": {"type": "string"}}}}}},
     "'additionalProperties' is required"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
      "tool_choice": {"type": "function", "function": {"name": "g"}}}, "not among 'tools'"),
    ({"tool_choice": "auto"}, "only allowed when 'tools' are specified"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "Out", "schema": {"type": "object"}}},
      "frobnicate": 1}, "Unrecognized request argument supplied: frobnicate"),
])
def test_requests_of_the_wrong_shape_are_refused(openai_server, request_args, message):
    client = openai.OpenAI(base_url=openai_server.url, api_key="test", max_retries=0)
    args = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Reply in json: " + GOOD_CODE[:20]}],
            **request_args}
    extra = {k: args.pop(k) for k in list(args) if k == "frobnicate"}
    with pytest.raises(openai.BadRequestError, match=message.replace("(", r"\(").replace(")", r"\)")):
        client.chat.completions.create(**args, extra_body=extra or None)
    assert len(openai_server.rejected) == 1


# -- strict mode: each of Structured Outputs' rules refuses a schema that breaks it ---------

ASK = "Reply in json with: "


def obj(**properties: dict) -> dict:
    """A strict object schema of these properties: all required, no others."""
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


STR = {"type": "string"}


def nested(levels: int) -> tuple[dict, dict]:
    """A schema of ``levels`` objects, each inside the one before, and an instance."""
    schema, instance = obj(x=STR), {"x": "deep"}
    for _ in range(levels - 1):
        schema, instance = obj(x=schema), {"x": instance}
    return schema, instance


def wide(count: int) -> tuple[dict, dict]:
    """A schema of one object of ``count`` properties, and an instance."""
    return obj(**{f"p{i}": STR for i in range(count)}), {f"p{i}": "v" for i in range(count)}


# a value for each keyword strict mode refuses, on a string property (``{"a": "x"}``
# satisfies the property without it)
NOT_PERMITTED_VALUES = {
    "default": "x", "allOf": [STR], "oneOf": [STR], "not": {"type": "null"}, "if": STR, "then": STR, "else": STR,
    "dependentRequired": {}, "dependentSchemas": {}, "patternProperties": {}, "unevaluatedProperties": False,
    "propertyNames": STR, "minProperties": 0, "maxProperties": 1, "unevaluatedItems": False, "contains": STR,
    "minContains": 1, "maxContains": 1, "uniqueItems": True, "minLength": 1, "maxLength": 8,
}
_B = {"$defs": {"B": obj(b=STR)}}
_LONG = ["y" * 59_999, "z" * 60_000]  # with the property's name "a": 120,000 characters, the limit


def _enum(values: list) -> tuple[dict, dict]:
    return obj(a={"type": "string" if isinstance(values[0], str) else "integer", "enum": values}), {"a": values[-1]}


# (rule, a schema that keeps it and an instance, a schema that breaks only that rule and
# an instance, the API's refusal)
STRICT_RULES = [
    ("additionalProperties", (obj(a=obj(b=STR)), {"a": {"b": "x"}}),
     (obj(a={"type": "object", "properties": {"b": STR}, "required": ["b"]}), {"a": {"b": "x"}}),
     "In context=('properties', 'a'), 'additionalProperties' is required to be supplied and to be false."),
    ("required", (obj(a=obj(b=STR, c=STR)), {"a": {"b": "x", "c": "y"}}),
     (obj(a={**obj(b=STR, c=STR), "required": ["b"]}), {"a": {"b": "x", "c": "y"}}),
     "In context=('properties', 'a'), 'required' is required to be supplied and to be an array including every key "
     "in properties. Missing 'c'."),
    ("root-object", (obj(a=STR), {"a": "x"}), ({"anyOf": [obj(a=STR), obj(b=STR)]}, {"a": "x"}),
     "schema must be a JSON Schema of 'type: \"object\"', got 'type: \"None\"'."),
    ("ref-alone", ({**obj(a={"$ref": "#/$defs/B"}), **_B}, {"a": {"b": "x"}}),
     ({**obj(a={"$ref": "#/$defs/B", "description": "the b"}), **_B}, {"a": {"b": "x"}}),
     "In context=('properties', 'a'), $ref cannot have keywords {'description'}."),
    ("nesting", nested(10), nested(11), "11 levels of nesting exceeds limit of 10."),
    ("properties", wide(5000), wide(5001), "5001 object properties exceeds limit of 5000."),
    ("enum-values", _enum(list(range(1000))), _enum(list(range(1001))), "1001 enum values exceeds limit of 1000."),
    ("long-enum", _enum([f"{i:060d}" for i in range(250)]), _enum([f"{i:060d}" for i in range(251)]),
     "In context=('properties', 'a'), enum has 251 string values of 15060 characters in all, over the limit of 15000"),
    ("string-length", _enum(_LONG), _enum([_LONG[0] + "y", _LONG[1]]),
     "total string length of 120001 exceeds limit of 120000."),
    *[(f"no-{kw}", (obj(a=STR), {"a": "x"}), (obj(a={**STR, kw: value}), {"a": "x"}),
       f"In context=('properties', 'a'), '{kw}' is not permitted.") for kw, value in NOT_PERMITTED_VALUES.items()],
]
RULES = {rule[0]: rule for rule in STRICT_RULES}


@pytest.fixture
def echo_server():
    """The test server with a model ("gpt-4o") that replies with the JSON its prompt asks for."""
    with OpenAIServer(lambda prompt: prompt.split(ASK, 1)[1]) as srv:
        srv.url = srv.start()
        srv.client = openai.OpenAI(base_url=srv.url, api_key="test", max_retries=0)
        yield srv


def ask(server: OpenAIServer, schema: dict, instance: dict, where: str, strict: bool = True, **args):
    """One request for ``instance`` with ``schema`` as a ``response_format`` or as a
    strict function's parameters."""
    if where == "response_format":
        args["response_format"] = {"type": "json_schema", "json_schema": {"name": "Out", "strict": strict, "schema": schema}}
    else:
        args["tools"] = [{"type": "function", "function": {"name": "Out", "strict": strict, "parameters": schema}}]
        args.setdefault("tool_choice", {"type": "function", "function": {"name": "Out"}})
    messages = [{"role": "user", "content": ASK + json.dumps(instance)}]
    return server.client.chat.completions.create(model="gpt-4o", messages=messages, **args)


def test_the_rules_cover_every_keyword_strict_mode_refuses():
    assert set(NOT_PERMITTED_VALUES) == set(STRICT_NOT_PERMITTED) and len(STRICT_RULES) == 9 + len(STRICT_NOT_PERMITTED)


@pytest.mark.parametrize("where", ["response_format", "function"])
@pytest.mark.parametrize(("rule", "keeps", "breaks", "refusal"), STRICT_RULES, ids=list(RULES))
def test_strict_mode_refuses_a_schema_that_breaks_one_rule(echo_server, where, rule, keeps, breaks, refusal):
    """A schema that keeps the rule is answered (200, the instance as content or as the
    function's arguments); one that breaks only that rule, with an instance of it, is
    refused with a 400 and the API's message, as a ``response_format`` and as a strict
    function's parameters (a checker without the rule would answer it: 200)."""
    reply = ask(echo_server, *keeps, where)
    message = reply.choices[0].message
    assert json.loads(message.content if where == "response_format" else message.tool_calls[0].function.arguments) == keeps[1]
    with pytest.raises(openai.BadRequestError) as refused:
        ask(echo_server, *breaks, where)
    error = refused.value.body
    named = "response_format 'Out'" if where == "response_format" else "function 'Out'"
    assert error["message"].startswith(f"Invalid schema for {named}: {refusal}"), error["message"]
    assert error["param"] == ("response_format.json_schema.schema" if where == "response_format" else "tools[0].function.parameters")
    assert error["code"] == (None if where == "response_format" else "invalid_function_parameters")
    assert echo_server.answered == 1 and len(echo_server.rejected) == 1


@pytest.mark.parametrize("where", ["response_format", "function"])
def test_without_strict_the_rules_do_not_apply(echo_server, where):
    """Strict mode's rules are strict mode's: the schemas it refuses are answered
    without ``strict`` (a ``default``, an open object, a ``$ref`` with a description)."""
    for rule in ("additionalProperties", "ref-alone", "no-default"):
        schema, instance = RULES[rule][2]
        reply = ask(echo_server, schema, instance, where, strict=False)
        message = reply.choices[0].message
        assert json.loads(message.content if where == "response_format" else message.tool_calls[0].function.arguments) == instance
    assert echo_server.rejected == [] and echo_server.answered == 3


def test_tools_and_a_response_format_together(echo_server):
    """The API takes strict tools beside a ``response_format``: with ``tool_choice``
    "auto" the reply is content in the format, with "required" a tool call; a strict
    function or a format that breaks a rule is refused whichever else comes with it."""
    fmt = {"type": "json_schema", "json_schema": {"name": "Out", "strict": True, "schema": obj(a=STR)}}
    tool = {"type": "function", "function": {"name": "lookup", "strict": True, "parameters": obj(a=STR)}}
    answered = ask(echo_server, obj(a=STR), {"a": "x"}, "response_format", tools=[tool], tool_choice="auto")
    assert {"tools", "response_format", "tool_choice"} <= echo_server.requests[0].keys()
    assert echo_server.requests[0]["response_format"] == fmt
    assert answered.choices[0].message.content == '{"a": "x"}' and answered.choices[0].message.tool_calls is None
    called = ask(echo_server, obj(a=STR), {"a": "x"}, "response_format", tools=[tool], tool_choice="required")
    assert called.choices[0].message.tool_calls[0].function.name == "lookup" and called.choices[0].finish_reason == "tool_calls"
    open_object = RULES["additionalProperties"][2]
    open_tool = {"type": "function", "function": {**tool["function"], "parameters": open_object[0]}}
    with pytest.raises(openai.BadRequestError, match="Invalid schema for function 'lookup'"):
        ask(echo_server, obj(a=STR), {"a": "x"}, "response_format", tools=[open_tool])
    with pytest.raises(openai.BadRequestError, match="Invalid schema for response_format 'Out'"):
        ask(echo_server, *open_object, "response_format", tools=[tool])
    assert echo_server.answered == 2 and len(echo_server.rejected) == 2


@pytest.mark.embedded
def test_supervisor_code_runs_and_the_real_embedded_model_answers_its_jobs(openai_server, tmp_path):
    """Supervisor code -> sandbox -> jobs on the real model: the server's supervisor
    writes working code (the 135M model's own code fails, so no other real-model test
    gets past the built-in plan), and the embedded SmolLM2 answers every job it makes."""
    settings = RunSettings(remote=f"gpt-4o@{openai_server.url};structured=json_schema", local="embedded",
                           chunk_tokens=40, max_chunk_chars=4000, sandbox="bwrap", max_rounds=1)
    result = run_minions([secret_doc()], QUESTION, settings, checkpoint=tmp_path)
    assert result.status == "answered", result.error
    assert result.sandbox == "bwrap" and not any("built-in plan" in n for n in result.notes), result.notes
    local = [c for c in result.calls if c["role"] == "local"]
    assert len(local) == 12 and {c["model"] for c in local} == {"embedded:SmolLM2-135M-Instruct"}
    assert all(c["prompt_tokens"] > 0 and c["completion_tokens"] > 0 for c in local)
    # a 135M model may ramble to the token limit; nothing else may go wrong with a call
    assert all(c["ok"] or "cut off at the token limit" in c["error"] for c in local), [c["error"] for c in local]
    assert result.usage.local.calls == 12 and all(c["node"] == "parallel_minion_map" for c in local)
    aggregate = openai_server.requests[-1]
    assert mode(aggregate) == "json_schema" and "Find the secret number" in aggregate["messages"][-1]["content"]


# -- a call past LangChain's invoke when nothing listens (serving.models.call_direct) ----------

def _parity(direct, invoked, volatile: tuple[str, ...] = ()) -> None:
    """Two replies to one request are the same message, up to what differs between two
    requests (a completion's id and creation time)."""
    assert type(direct) is type(invoked)
    assert (direct.content, direct.usage_metadata, direct.additional_kwargs, direct.tool_calls) == (
        invoked.content, invoked.usage_metadata, invoked.additional_kwargs, invoked.tool_calls)
    assert direct.response_metadata.keys() == invoked.response_metadata.keys()
    assert ({k: v for k, v in direct.response_metadata.items() if k not in volatile}
            == {k: v for k, v in invoked.response_metadata.items() if k not in volatile})
    assert direct.id.split("-")[0] == invoked.id.split("-")[0] and direct.id != invoked.id


def test_a_direct_call_returns_what_invoke_returns(openai_server):
    """``ChatOpenAI`` over HTTP and a fake: the same request body, the same message
    (content, usage, response metadata with the model's name and provider, id's form);
    a ``ModelClient.text`` call records the same usage either way."""
    from conftest import default_local
    from fakes import PromptFake
    from minionflow.serving.models import ModelClient, call_direct, callable_direct

    messages = [SystemMessage("You answer from the chunk."), HumanMessage(f"Chunk: the secret number is 42.\n{QUESTION}")]
    client = DefaultModelProvider().client(ModelSpec.parse(f"gpt-4o-mini@{openai_server.url};reply=text"), "local", 64)
    assert callable_direct(client.chat)
    invoked = client.chat.invoke(messages)
    direct = call_direct(client.chat, messages)
    _parity(direct, invoked, volatile=("id", "created_at", "created"))
    assert direct.response_metadata["model_name"] == "gpt-4o-mini" and direct.response_metadata["model_provider"] == "openai"
    first, second = (dict(b) for b in openai_server.requests[-2:])
    assert first == second  # the request itself does not change
    records = [client.text(messages, unheard) for unheard in (False, True)]
    assert records[0].usage == records[1].usage == (invoked.usage_metadata["input_tokens"],
                                                    invoked.usage_metadata["output_tokens"], 0)

    fake = PromptFake(responder=default_local)
    _parity(call_direct(fake, messages), fake.invoke(messages))
    assert ModelClient(ModelSpec.parse("embedded"), fake).text(messages, True).message.content == default_local(
        "\n".join(str(m.content) for m in messages))


def test_what_makes_a_call_go_through_invoke():
    """A handler in the config, LangSmith tracing, or a model that needs ``invoke`` (its
    own callbacks, an LLM cache, a rate limiter, streaming, the v1 output format)."""
    from fakes import PromptFake
    from langchain_core.caches import InMemoryCache
    from langchain_core.callbacks import BaseCallbackHandler
    from langchain_core.rate_limiters import InMemoryRateLimiter
    from langchain_core.runnables import RunnableLambda
    from langchain_core.tracers.context import tracing_v2_enabled
    from langsmith import Client
    from minionflow.serving.models import callable_direct, unheard_here

    ask = RunnableLambda(lambda _: unheard_here())
    assert unheard_here() and ask.invoke(None)
    assert not ask.invoke(None, {"callbacks": [BaseCallbackHandler()]})
    # tracing as `with tracing_v2_enabled()` turns it on (the environment variables are read once a process)
    with tracing_v2_enabled(project_name="minionflow-test", client=Client(api_key="not-a-key", api_url="http://127.0.0.1:9", info={})):
        assert not unheard_here()
    assert unheard_here()

    def fake(**fields):  # type: ignore[no-untyped-def]
        return PromptFake(responder=lambda p: "x", **fields)

    assert callable_direct(fake())
    for fields in ({"callbacks": [BaseCallbackHandler()]}, {"cache": InMemoryCache()}, {"verbose": True},
                   {"rate_limiter": InMemoryRateLimiter(requests_per_second=100)}, {"output_version": "v1"}):
        assert not callable_direct(fake(**fields)), fields
