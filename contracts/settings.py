"""Run settings: model specs, protocol limits and the price table.

Settings are stored in the thread's state (as plain data), so a resumed run uses
the settings it started with.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from .custom_graph import graph_name


class SandboxLimits(BaseModel):
    """Limits applied to every execution of supervisor code."""

    timeout_s: float = Field(20.0, gt=0, description="wall-clock limit")
    cpu_seconds: int = Field(15, gt=0)
    memory_mb: int = Field(1024, gt=64, description="address-space limit")
    processes: int = Field(32, gt=0)
    file_size_mb: int = Field(16, gt=0)
    open_files: int = Field(256, gt=16)
    tmpfs_mb: int = Field(64, gt=0)
    max_output_bytes: int = Field(64 * 1024 * 1024, gt=1024)
    max_log_bytes: int = Field(64 * 1024, gt=0)

    def runner_limits(self) -> dict[str, int]:
        return {
            "cpu_seconds": self.cpu_seconds,
            "memory_bytes": self.memory_mb * 1024 * 1024,
            "processes": self.processes,
            "file_size_bytes": self.file_size_mb * 1024 * 1024,
            "open_files": self.open_files,
        }


StructuredMethod = Literal["auto", "json_schema", "json_object_schema", "function_calling"]
ReplyFormat = Literal["json", "text"]

OPENAI_BASE_URL = "https://api.openai.com/v1"

# How the embedded model replies as a minion unless the spec says (";reply=json"):
# measured on the bundled suite (evals/README.md, benchmarks/worker_formats.py).
EMBEDDED_REPLY: ReplyFormat = "text"

# Named providers: prefix -> (base URL, API key variable, structured-output method).
PROVIDERS: dict[str, tuple[str, str | None, StructuredMethod]] = {
    "openai": (OPENAI_BASE_URL, "OPENAI_API_KEY", "json_schema"),
    "openrouter": ("https://openrouter.ai/api/v1", "OPENROUTER_API_KEY", "json_schema"),
    "ollama": ("http://127.0.0.1:11434/v1", None, "json_schema"),
}

# what a model spec error ends with: short, one line (the full list is docs/models.md)
SPEC_HINT = "model specs look like embedded, openai:gpt-4o, ollama:llama3.2 or MODEL@http://host:8000/v1 (docs/models.md)"


class ModelSpecError(ValueError):
    """A model spec string that cannot be understood."""


class ModelSpec(BaseModel):
    """Where a chat model lives and how to talk to it. Never holds the API key itself."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["embedded", "openai_compatible"]
    model: str
    base_url: str | None = None
    api_key_env: str | None = None
    gguf_path: str | None = None
    structured: StructuredMethod = "auto"
    context_window: int = Field(8192, gt=512)
    # whether ";ctx=N" stated context_window; else it is the model's own only for the
    # embedded server, which is started with it (window_known), and a server may say
    # (serving.context_guard)
    context_known: bool = False
    # how the model replies when it works as a minion: a JSON JobOutput (structured
    # output), or plain text read leniently (nodes.support.replies). Tiny models lose answers
    # under grammar-constrained JSON; the embedded default is the format that measured
    # best on the bundled eval suite (evals/README.md, benchmarks/worker_formats.py).
    reply: ReplyFormat = "json"
    # as a local endpoint of a pool (RunSettings.local_endpoints): how many requests it
    # takes at once (";slots=N"; default: RunSettings.endpoint_slots) and, for the
    # embedded model, how many servers to start (";servers=N"), each one endpoint;
    # ``replica`` numbers those servers (0 is the first)
    slots: int | None = Field(None, ge=1, le=256)
    servers: int = Field(1, ge=1, le=16)
    replica: int = Field(0, ge=0)

    @property
    def window_known(self) -> bool:
        """Whether context_window is the window the model runs with: stated (";ctx=N"),
        or the embedded server's, which minionflow starts with it."""
        return self.kind == "embedded" or self.context_known

    @property
    def label(self) -> str:
        if self.kind == "embedded":
            return f"embedded:{self.model}" + (f"#{self.replica + 1}" if self.replica else "")
        return f"{self.model}@{self.base_url}"

    @classmethod
    def parse(cls, spec: str) -> ModelSpec:
        text = spec.strip()
        if not text:
            raise ModelSpecError(f"empty model spec; {SPEC_HINT}")
        head, *opts = text.split(";")
        options: dict[str, str] = {}
        for opt in opts:
            key, sep, value = opt.partition("=")
            if not sep or key.strip() not in {"key", "structured", "reply", "ctx", "slots", "servers"}:
                raise ModelSpecError(f"unknown option {opt!r} in model spec {spec!r}; {SPEC_HINT}")
            options[key.strip()] = value.strip()
        structured = options.get("structured", "auto")
        if structured not in ("auto", "json_schema", "json_object_schema", "function_calling"):
            raise ModelSpecError(f"unknown structured-output method {structured!r} in {spec!r}; use json_schema, json_object_schema or function_calling")
        reply = options.get("reply")
        if reply not in (None, "json", "text"):
            raise ModelSpecError(f"unknown reply format {reply!r} in {spec!r}; use json or text")
        spec_obj = cls._parse_head(spec, head, options, structured)
        if "ctx" in options:
            if not options["ctx"].isdigit() or int(options["ctx"]) <= 512:
                raise ModelSpecError(f"ctx must be a number of tokens above 512 in {spec!r}, got {options['ctx']!r}")
            spec_obj = spec_obj.model_copy(update={"context_window": int(options["ctx"]), "context_known": True})
        for name, top in (("slots", 256), ("servers", 16)):
            if name in options:
                value = options[name]
                if not value.isdigit() or not 1 <= int(value) <= top:
                    raise ModelSpecError(f"{name} must be a number from 1 to {top} in {spec!r}, got {value!r}")
                if name == "servers" and spec_obj.kind != "embedded":
                    raise ModelSpecError(f"servers=N starts embedded model servers; {spec!r} is served elsewhere "
                                         "(give each server of a pool as its own spec)")
                spec_obj = spec_obj.model_copy(update={name: int(value)})
        return spec_obj if reply is None else spec_obj.model_copy(update={"reply": reply})

    @classmethod
    def _parse_head(cls, spec: str, head: str, options: dict[str, str], structured: str) -> ModelSpec:
        if head == "embedded" or head.startswith("embedded:"):
            path = head.partition(":")[2] or None
            if path and not path.endswith(".gguf"):
                raise ModelSpecError(f"embedded model path must be a .gguf file, got {path!r}")
            name = os.path.basename(path)[: -len(".gguf")] if path else "SmolLM2-135M-Instruct"
            return cls(kind="embedded", model=name, gguf_path=path, structured="json_object_schema", reply=EMBEDDED_REPLY)
        prefix, sep, rest = head.partition(":")
        if prefix == "dmr" and sep:
            return cls._from_compose(rest, options.get("key"), structured)
        if sep and prefix in PROVIDERS and rest and "//" not in rest:
            base_url, key_env, method = PROVIDERS[prefix]
            return cls(
                kind="openai_compatible",
                model=rest,
                base_url=base_url,
                api_key_env=options.get("key", key_env),
                structured=structured if structured != "auto" else method,
            )
        name, at, url = head.rpartition("@")
        if at and name and url.startswith(("http://", "https://")):
            return cls(
                kind="openai_compatible",
                model=name,
                base_url=url.rstrip("/"),
                api_key_env=options.get("key"),
                structured=structured,  # type: ignore[arg-type]
            )
        raise ModelSpecError(f"unknown model spec {spec!r}; {SPEC_HINT}")

    @classmethod
    def _from_compose(cls, name: str, key_env: str | None, structured: str) -> ModelSpec:
        """``dmr:NAME``: the model Docker Compose's ``models:`` gives a service, read from
        the variables it injects, ``NAME_URL`` and ``NAME_MODEL`` (the default
        ``endpoint_var`` and ``model_var`` for a model named ``name``)."""
        prefix = name.upper().replace("-", "_")
        url, model = os.environ.get(f"{prefix}_URL"), os.environ.get(f"{prefix}_MODEL")
        if not prefix or not url or not model:
            raise ModelSpecError(
                f"dmr:{name} reads the Docker Model Runner endpoint from ${prefix}_URL and the model from "
                f"${prefix}_MODEL, which Docker Compose sets for a service with `models: [{name.lower()}]`; "
                "they are not set here"
            )
        return cls(kind="openai_compatible", model=model, base_url=url.rstrip("/"), api_key_env=key_env,
                   structured=structured)  # type: ignore[arg-type]


def cache_dir() -> Path:
    """Where minionflow keeps what it derives and could make again (the parsed tokenizer,
    the embedded model's converted file): ``$XDG_CACHE_HOME/minionflow``, by default
    ``~/.cache/minionflow``."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "minionflow"


def default_remote_spec(environ: dict[str, str] | None = None) -> ModelSpec:
    """OpenAI gpt-4o when OPENAI_API_KEY is set, else the embedded model."""
    env = os.environ if environ is None else environ
    return ModelSpec.parse("openai:gpt-4o" if env.get("OPENAI_API_KEY") else "embedded")



# With the embedded model as the supervisor (a 135M model), extra rounds and code
# attempts cost minutes (one pass over a 100 KB document takes about three on two
# cores) and rarely help: these defaults keep the offline run under five minutes. Its
# final answers often take nothing from the grounded minion answers: they are
# replaced by the extractive answer (nodes.support.extractive).
# It is not asked for ``prepare_jobs`` code either ("plan": "builtin"): it never wrote code that
# ran (every round of the bundled suite fell back to the built-in plan), and its decompose reply
# alone took 20 s to 4 min a question.
EMBEDDED_SUPERVISOR_DEFAULTS: dict[str, Any] = {"max_rounds": 1, "max_code_attempts": 1, "extractive_fallback": "ignored",
                                                "plan": "builtin", "tasks_per_round": 1}

# The fewest rounds each protocol needs, by name, as its Protocol says: the registry
# (graphs.protocols) records the built-in protocols when it is imported and a package's when
# it is registered. The embedded supervisor's default max_rounds is never fewer, however the
# settings are made; settings made before minionflow.graphs is imported know only the
# general minimum (1), and a protocol that needs more refuses them with a clear message.
_min_rounds: dict[str, int] = {}


def record_min_rounds(protocol: str, rounds: int) -> None:
    """Note that ``protocol`` needs at least ``rounds`` rounds (the registry does, for each
    protocol it knows)."""
    _min_rounds[protocol] = rounds


def min_rounds_of(protocol: str) -> int:
    """The fewest rounds a protocol known to this process needs (1 for one it does not know)."""
    return _min_rounds.get(protocol, 1)


def embedded_supervisor_defaults(min_rounds: int = 1) -> dict[str, Any]:
    """The defaults above, with at least the rounds a protocol needs (a Minion chat: a
    question, then the answer)."""
    return {**EMBEDDED_SUPERVISOR_DEFAULTS, "max_rounds": max(EMBEDDED_SUPERVISOR_DEFAULTS["max_rounds"], min_rounds)}


def default_settings(overrides: dict[str, Any] | None = None, environ: dict[str, str] | None = None,
                     min_rounds: int = 1) -> RunSettings:
    """Settings for a run that names only what it changes (a None value changes
    nothing), with the default supervisor when it names none (``default_remote_spec``:
    OpenAI's gpt-4o with ``OPENAI_API_KEY`` set, else the embedded model). Otherwise the same
    as ``RunSettings(**overrides)``: with the embedded supervisor, its defaults
    (``RunSettings``'s validator), with at least ``min_rounds`` rounds. Used by the CLI and by
    the runs LangGraph clients start."""
    data: dict[str, Any] = {k: v for k, v in (overrides or {}).items() if v is not None}
    if "remote" not in data:
        data["remote"] = default_remote_spec(environ)
    return RunSettings.model_validate(data, context={"min_rounds": min_rounds})


def first_error(exc: ValidationError) -> tuple[str, str]:
    """Where the first validation error is (dotted, empty for the whole model) and
    what it says, for a one-line message."""
    first = exc.errors()[0]
    return ".".join(map(str, first["loc"])), str(first["msg"]).removeprefix("Value error, ")


class RolePrices(BaseModel):
    """US dollars per million tokens."""

    input_per_million: float = Field(0.0, ge=0)
    output_per_million: float = Field(0.0, ge=0)
    cached_input_per_million: float | None = Field(None, ge=0, description="defaults to the input price")

    def cost(self, prompt: int, completion: int, cached: int = 0) -> float:
        cached_price = self.input_per_million if self.cached_input_per_million is None else self.cached_input_per_million
        uncached = max(prompt - cached, 0)
        return (uncached * self.input_per_million + cached * cached_price + completion * self.output_per_million) / 1e6


class PriceTable(BaseModel):
    """Defaults: the paper's GPT-4o rates for the remote model, local calls free."""

    remote: RolePrices = Field(default_factory=lambda: RolePrices(input_per_million=2.50, output_per_million=10.0))
    local: RolePrices = Field(default_factory=RolePrices)


# fields every stored RunSettings dump has and no command line sets: settings that hold them
# all were stored (``RunSettings._supervisor_defaults``)
_STORED = frozenset({"local_pool", "max_chunk_chars", "sandbox_limits", "prices"})

# a protocol's name: lower-case letters, digits and dashes, a letter first
PROTOCOL_NAME = r"^[a-z][a-z0-9-]{0,39}$"


class RunSettings(BaseModel):
    """Everything that shapes a run. Stored in state; validated at every boundary.

    One way to make them: ``RunSettings(...)`` and ``default_settings({...})`` give the same
    settings for the same fields (with the embedded model named as ``remote``, the embedded
    supervisor's defaults: ``_supervisor_defaults``); ``default_settings`` only adds the
    environment's supervisor when none is named. ``graph`` also takes a graph object, which
    it records by name (``contracts.custom_graph``)."""

    model_config = ConfigDict(extra="forbid")

    remote: ModelSpec = Field(default_factory=lambda: ModelSpec.parse("embedded"))
    local: ModelSpec = Field(default_factory=lambda: ModelSpec.parse("embedded"))
    local_pool: list[ModelSpec] = Field(default_factory=list, description="further local endpoints: the minions' jobs "
                                        "are spread over local and these (serving.pool)")
    protocol: str = Field("minions", pattern=PROTOCOL_NAME,
                          description="the protocol's name: minions, minion (the chat protocol), remote-only, local-only, "
                          "or one a package registers (minionflow protocols lists them)")
    graph: str | None = Field(None, description="the custom graph: module:attr of a StateGraph, a compiled graph or a "
                              "function that builds one (minionflow run --graph); from Python also the object itself, "
                              "recorded by name (contracts.custom_graph)")
    max_rounds: int = Field(5, ge=1, le=50)
    max_code_attempts: int = Field(3, ge=1, le=10)
    plan: Literal["auto", "code", "builtin"] = Field(
        "auto", description="who makes a MinionS round's jobs: 'code', the supervisor's prepare_jobs code every round; "
        "'builtin', the built-in plan (every chunk x the task and its parts), the supervisor asked only to aggregate; 'auto' (the "
        "default), the supervisor's code until it fails every attempt of a round, then the built-in plan for the rest "
        "of the run ('builtin' is the default with the embedded supervisor)")
    samples: int = Field(1, ge=1, le=16, description="replies per job (the paper's samples per task): the first at "
                         "temperature 0, the others at sample_temperature with seeds 1, 2, ...; the job's answer is the "
                         "one most of its grounded replies give; every reply is a call in the usage")
    sample_temperature: float = Field(0.7, gt=0, le=2, description="the temperature of a job's replies after its first")
    tasks_per_round: int = Field(3, ge=1, le=20, description="how many distinct tasks a round asks of every chunk: "
                                 "the supervisor is asked to write this many; the built-in plan asks the question, then "
                                 "the parts of a compound one ('..., and which ...?'), up to this many (1 with the "
                                 "embedded supervisor)")
    chunk_tokens: int = Field(1000, ge=10, description="chunk size of the built-in plan, and the hint given to the supervisor")
    max_jobs_per_round: int = Field(200, ge=1, le=100_000)
    max_chunk_chars: int = Field(12_000, ge=200, description="longer job chunks are split before they reach a local model")
    local_concurrency: int = Field(4, ge=1, le=256)
    job_cache: bool = Field(True, description="answer a job identical to one answered before (same model, prompt, chunk, "
                            "task) from the store's job cache, with no new local tokens")
    max_forwarded_outputs: int = Field(30, ge=1, description="cap on minion outputs forwarded to the remote model")
    max_answer_chars: int = Field(600, ge=20, description="longer minion answers are cut before forwarding")
    redact: Literal["off", "pii"] = Field("off", description="pii: replace personal data (names, e-mails, phone, "
                                          "account and record numbers) in what the documents give the remote model "
                                          "with placeholders, restored locally in the answer (nodes.support.redaction)")
    budget_tokens: int | None = Field(None, gt=0, description="cap on the remote model's tokens (prompt and reply) "
                                      "for the run: a call that would cross it is not made (nodes.support.budget)")
    budget_usd: float | None = Field(None, gt=0, description="cap on the remote model's cost for the run, in US dollars "
                                     "at the price table's rates")
    max_quote_chars: int | None = Field(None, ge=10, description="cap on each quote forwarded to the remote model "
                                        "(characters; default: max_answer_chars)")
    min_citation_score: float = Field(80.0, ge=0, le=100, description="a minion's quote must match its chunk this well (0-100, fuzzy) to be forwarded")
    min_answer_support: float = Field(0.6, ge=0, le=1, description="share of a minion answer's words one passage of its chunk must hold for it to be forwarded")
    local_max_tokens: int = Field(256, ge=16)
    remote_max_tokens: int = Field(1024, ge=64)
    max_job_attempts: int = Field(2, ge=1, le=5, description="a failed job is re-run in the next round until this many attempts")
    extractive_fallback: Literal["unusable", "ignored"] = Field(
        "unusable", description="when the extractive answer replaces the supervisor's final answer: when its reply is "
        "unusable, or also when its answer ignores every grounded minion answer about the question ('ignored', the "
        "default with the embedded supervisor)")
    approve_code: bool = Field(False, description="interrupt before each execution of supervisor code for a human to review")
    sandbox: Literal["auto", "docker", "bwrap"] = "auto"
    sandbox_runtime: str | None = Field(None, description="OCI runtime for the docker backend, e.g. runsc (gVisor)")
    sandbox_limits: SandboxLimits = Field(default_factory=SandboxLimits)
    prices: PriceTable = Field(default_factory=PriceTable)

    @model_validator(mode="before")
    @classmethod
    def _local_list(cls, data: Any) -> Any:
        """``local`` may name several endpoints: a list of specs, or one string with
        commas (``embedded,llama3.2@http://laptop:11434/v1``); the first is ``local``,
        the others are ``local_pool`` (a ``local_pool`` given beside them is replaced, so
        that settings updated with a new ``local`` list, as a fork does, keep no old one)."""
        if not isinstance(data, dict):
            return data
        local = data.get("local")
        if isinstance(local, str) and "," in local:
            local = [part for part in local.split(",") if part.strip()] or [local]
        if isinstance(local, list):
            if not local:
                raise ValueError("local: name at least one model spec")
            data = {**data, "local": local[0], "local_pool": local[1:]}
        return data

    @model_validator(mode="before")
    @classmethod
    def _supervisor_defaults(cls, data: Any, info: ValidationInfo) -> Any:
        """With the embedded model named as the supervisor (``remote``), the embedded-supervisor
        defaults (``EMBEDDED_SUPERVISOR_DEFAULTS``) for what the data does not give, with at
        least the rounds its protocol needs (``min_rounds_of``, or a validation context's
        ``min_rounds``): ``RunSettings(remote="embedded")``, ``default_settings`` and the CLI
        get the same settings. Settings that name no supervisor keep the general defaults
        (and the embedded model as ``remote``); stored settings name every field, so a thread
        reads back what it stored."""
        if not isinstance(data, dict) or data.get("remote") is None:
            return data
        if _STORED <= set(data):
            # settings a thread or an eval stored name every field of the version that stored
            # them: a field added since (``plan``) takes its general default, what that version did
            return data
        remote = data["remote"]
        try:
            spec = ModelSpec.parse(remote) if isinstance(remote, str) else ModelSpec.model_validate(remote)
        except (ModelSpecError, ValidationError):
            return data  # the field's own validation says what is wrong with it
        if spec.kind != "embedded":
            return data
        given = info.context.get("min_rounds", 1) if isinstance(info.context, dict) else 1
        min_rounds = max(given, min_rounds_of(str(data.get("protocol") or "minions")))
        return {**embedded_supervisor_defaults(min_rounds), **data}

    @field_validator("graph", mode="before")
    @classmethod
    def _graph_object(cls, value: Any) -> Any:
        """A graph given as an object (a ``StateGraph``, a compiled graph, a function that
        builds one) is recorded by its name (``contracts.custom_graph.graph_name``)."""
        return value if value is None or isinstance(value, str) else graph_name(value)

    @field_validator("remote", "local", mode="before")
    @classmethod
    def _spec_string(cls, value: Any) -> Any:
        """A spec may be given as its string (``openai:gpt-4o``, ``embedded``, ``M@URL``)."""
        return ModelSpec.parse(value) if isinstance(value, str) else value

    @field_validator("local_pool", mode="before")
    @classmethod
    def _pool_strings(cls, value: Any) -> Any:
        return [ModelSpec.parse(v) if isinstance(v, str) else v for v in value] if isinstance(value, list) else value

    def endpoint_slots(self, spec: ModelSpec) -> int:
        """How many requests a local endpoint takes at once: its ``;slots=N``, else 1 for
        an embedded server (llama-cpp-python's answers one at a time: with more in flight
        it picks their order and breaks the chunk-by-chunk prefix reuse;
        benchmarks/throughput.py), else ``local_concurrency``."""
        if spec.slots is not None:
            return spec.slots
        return 1 if spec.kind == "embedded" else self.local_concurrency

    @property
    def local_endpoints(self) -> list[ModelSpec]:
        """Every local endpoint the minions' jobs may go to, in the order given: ``local``
        then ``local_pool``, an embedded spec with ``servers=N`` as N replicas."""
        endpoints: list[ModelSpec] = []
        for spec in (self.local, *self.local_pool):
            endpoints += [spec.model_copy(update={"replica": i}) for i in range(spec.servers)]
        return endpoints

    @model_validator(mode="after")
    def _distinct_endpoints(self) -> RunSettings:
        labels = [spec.label for spec in self.local_endpoints]
        twice = sorted({label for label in labels if labels.count(label) > 1})
        if twice:
            raise ValueError(f"local endpoint {twice[0]} is named twice (for more servers of the embedded model, "
                             "use embedded;servers=N)")
        return self

    @model_validator(mode="after")
    def _chunks_fit(self) -> RunSettings:
        if self.chunk_tokens * 4 > self.max_chunk_chars:
            raise ValueError(
                f"chunk_tokens={self.chunk_tokens} (~{self.chunk_tokens * 4} characters) exceeds max_chunk_chars={self.max_chunk_chars}"
            )
        return self
