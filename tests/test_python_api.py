"""The Python API: a graph given as an object (a ``StateGraph``, a compiled graph, a function
that builds one) runs wherever a ``module:attr`` name does, in the process that has it; a
thread started with one is refused, in one clear line, by another process. And one way to
make settings: ``RunSettings(...)`` and ``default_settings({...})`` apply the embedded
supervisor's defaults alike."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import openai
import pytest
from conftest import SUBPROCESS_TIMEOUT, cli_env, default_local, default_remote, secret_doc
from fakes import FakeProvider, PromptFake
from minionflow.contracts.settings import ModelSpec, default_settings
from minionflow.graphs import RunContext, RunSettings, minions_builder, retrieval_minions
from minionflow.graphs.protocols import build_graph, get_protocol, protocol_for
from minionflow.graphs.run import resume_minions, run_minions
from minionflow.graphs.threads import show_thread
from minionflow.sandbox import BwrapBackend
from minionflow.storage.persistence import open_persistence
from pydantic import ValidationError

QUESTION = "What is the secret number?"
MARK = "the custom graph ran"


def marked():
    """MinionS with a step before the first round that leaves a note: a run shows it ran this graph."""
    return minions_builder(prelude=[("mark", lambda state: {"notes": [MARK]})])


def down_at_aggregation(prompt: str) -> str:
    if "Write prepare_jobs now" in prompt:
        return default_remote(prompt)
    raise openai.APIConnectionError(request=httpx.Request("POST", "http://127.0.0.1:1/v1/chat/completions"))


def run(graph, checkpoint: Path, remote=default_remote, bwrap: BwrapBackend | None = None):  # type: ignore[no-untyped-def]
    settings = RunSettings(graph=graph, chunk_tokens=40, max_chunk_chars=4000)
    context = RunContext(settings=settings, sandbox=bwrap,
                         models=FakeProvider(PromptFake(responder=remote), PromptFake(responder=default_local)))
    return settings, run_minions([secret_doc()], QUESTION, context, checkpoint=checkpoint)


def test_a_graph_object_runs_where_a_module_attr_name_does(tmp_path, bwrap):
    builder = marked()

    def build():
        return builder

    for i, graph in enumerate((builder, builder.compile(), build, lambda: builder.compile())):
        settings, result = run(graph, tmp_path / str(i), bwrap=bwrap)
        assert settings.graph is not None and settings.graph.startswith("<object>:")
        assert result.status == "answered" and result.answer == "42", (i, result.error)
        assert MARK in result.notes  # this graph ran, not the default one
        assert "mark" in protocol_for(settings).build().nodes and "mark" in build_graph(settings).nodes
        with open_persistence(tmp_path / str(i)) as (saver, store):
            view = show_thread(saver, store, result.thread_id)
        assert view.summary.protocol == settings.graph and view.settings["graph"] == settings.graph
    # the same object is one name; a run context given the settings as JSON takes an object too
    assert RunSettings(graph=builder).graph == RunSettings(graph=builder).graph != RunSettings(graph=build).graph
    assert RunContext(settings={"graph": builder}).run_settings.graph == RunSettings(graph=builder).graph


def test_a_function_at_the_top_of_a_module_is_recorded_by_its_importable_name():
    assert RunSettings(graph=retrieval_minions).graph == "minionflow.graphs.variants:retrieval_minions"
    assert RunSettings(graph=marked).graph == "test_python_api:marked"
    settings = RunSettings(graph=marked)
    assert RunSettings.model_validate(settings.model_dump(mode="json")) == settings  # stored and read back
    with pytest.raises(ValidationError, match="a graph is module:attr, a StateGraph, a compiled graph or a function"):
        RunSettings(graph=3)


def test_a_graph_object_thread_resumes_in_its_process_and_elsewhere_needs_an_importable_name(tmp_path, bwrap):
    home = tmp_path / "home"
    settings, failed = run(marked(), home, remote=down_at_aggregation, bwrap=bwrap)
    assert failed.status == "failed" and MARK in failed.notes
    other_process = (
        "import json, sys\n"
        "from minionflow.contracts.errors import BadInput\n"
        "from minionflow.graphs.run import resume_minions\n"
        "from minionflow.graphs.threads import list_threads\n"
        "from minionflow.storage.persistence import open_persistence\n"
        "with open_persistence(sys.argv[2]) as (saver, store):\n"
        "    listed = [(t.protocol, t.status) for t in list_threads(saver, store)]\n"
        "try:\n"
        "    resume_minions(sys.argv[1], checkpoint=sys.argv[2])\n"
        "except BadInput as exc:\n"
        "    print(json.dumps({'error': str(exc), 'listed': listed}))\n"
        "    sys.exit(3)\n"
    )
    out = subprocess.run([sys.executable, "-c", other_process, failed.thread_id, str(home)], capture_output=True,
                         text=True, env=cli_env(home), timeout=SUBPROCESS_TIMEOUT)
    assert out.returncode == 3, out.stderr[-2000:]
    said = json.loads(out.stdout)
    assert "\n" not in said["error"]
    assert said["error"] == (f"graph {settings.graph!r} was a Python object of the process that started this run, and "
                             "no other process can rebuild it: go on in that process, or start the run with "
                             "graph='module:attr' (an importable name)")
    assert said["listed"] == [[settings.graph, "unfinished"]]  # show and runs still read it there
    # in the process that has the object, the thread goes on with it: the finished jobs are not run again
    local = PromptFake(responder=default_local)
    done = resume_minions(failed.thread_id, checkpoint=home, context=RunContext(
        sandbox=bwrap, models=FakeProvider(PromptFake(responder=default_remote), local)))
    assert done.status == "answered" and done.answer == "42" and local.prompts == []


def test_run_settings_and_default_settings_apply_the_embedded_supervisor_defaults_alike():
    cases = [
        {"remote": "embedded"},
        {"remote": ModelSpec.parse("embedded")},
        {"remote": "embedded", "protocol": "minion"},
        {"remote": "embedded", "max_rounds": 3, "extractive_fallback": "unusable"},
        {"remote": "embedded;ctx=4096", "max_code_attempts": 2},
        {"remote": "openai:gpt-4o"},
        {"remote": "openai:gpt-4o", "protocol": "minion"},
    ]
    for given in cases:
        protocol = get_protocol(str(given.get("protocol", "minions")))
        # what the CLI makes (cli.options.build_settings: default_settings with the protocol's rounds)
        cli = default_settings(dict(given), environ={}, min_rounds=protocol.min_rounds)
        assert RunSettings(**given) == cli == RunSettings.model_validate(given), given
        assert RunContext(settings=dict(given)).run_settings == cli, given
    embedded, chat = RunSettings(remote="embedded"), RunSettings(remote="embedded", protocol="minion")
    assert (embedded.max_rounds, embedded.max_code_attempts, embedded.extractive_fallback, embedded.plan) == (
        1, 1, "ignored", "builtin")
    assert chat.max_rounds == 2  # a chat needs a question and an answer
    assert (RunSettings(remote="embedded", max_rounds=3).max_rounds, RunSettings(remote="embedded", max_rounds=3).max_code_attempts) == (3, 1)
    general = RunSettings(remote="openai:gpt-4o")
    assert (general.max_rounds, general.max_code_attempts, general.extractive_fallback, general.plan) == (
        5, 3, "unusable", "auto")
    # settings stored in a thread name every field: they read back as they were, whatever the supervisor
    stored = RunSettings(remote="openai:gpt-4o").model_dump(mode="json")
    assert RunSettings.model_validate({**stored, "remote": "embedded"}).max_rounds == 5
    # a field added after a thread stored its settings takes the general default, what that
    # version did: an embedded supervisor's old thread asked for code
    old = {k: v for k, v in RunSettings(remote="embedded").model_dump(mode="json").items() if k != "plan"}
    assert RunSettings.model_validate(old).plan == "auto" and RunSettings(remote="embedded").plan == "builtin"
    # no supervisor named: the general defaults; default_settings picks the environment's supervisor
    assert RunSettings().max_rounds == 5
    assert default_settings({}, environ={}).max_rounds == 1
    assert default_settings({}, environ={"OPENAI_API_KEY": "k"}).max_rounds == 5
