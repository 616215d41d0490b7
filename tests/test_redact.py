"""PII redaction (nodes.support.redaction, Presidio with spaCy's English model): with --redact pii,
no seeded name, e-mail, phone, account or record number, IBAN, passport number or IP
address reaches any remote prompt of any protocol (each of them does with it off), the
answers are still right (a name the supervisor names by its placeholder is restored for
the user, and so are an IBAN, a passport number and IP addresses), and placeholders are
consistent within a run; with it off, the egress ledger counts what left.

A passport number is nine digits to Presidio (``US_PASSPORT``): it is found after a
context word ("Passport No.: 912803456", "travel document 912803456"), not alone, not
before its word ("912803456 (passport)"), and not in another country's format."""

from __future__ import annotations

import json
import re

import pytest
from conftest import final_json, worker_json
from fakes import FakeProvider, PromptFake
from minionflow.contracts.settings import RunSettings
from minionflow.graphs import RunContext
from minionflow.graphs.run import run_minions
from minionflow.nodes.support.redaction import Redactor, restore
from minionflow.storage.documents import LoadedDocument

SEEDED = ["John Smith", "john.smith@example.com", "415-555-0134", "4111-2222-3333", "884-22-1937", "Maria Garcia"]
WITNESS = ("The secret number is 42, confirmed by John Smith (john.smith@example.com, +1 415-555-0134) "
           "for account 4111-2222-3333.")
# an IBAN with a valid checksum, a passport number as a document gives it, an IPv4 and an IPv6 address
IBAN, PASSPORT, IPV4, IPV6 = "DE89 3704 0044 0532 0130 00", "912803456", "203.0.113.42", "2001:db8:85a3::8a2e:370:7334"
TRAVEL = f"His Passport No.: {PASSPORT}; he paid from IBAN {IBAN} and signed in from {IPV4} and {IPV6}."
SEEDED_IDS = [IBAN, PASSPORT, IPV4, IPV6, "3704 0044", "8a2e:370"]  # the values and parts of them
PATIENT = "Patient Maria Garcia, MRN 884-22-1937, was seen on the pier by John Smith."
QUESTION = "Who confirmed the secret number?"
CODE = f'''```python
def prepare_jobs(context, prev_job_manifests, prev_job_outputs):
    return [JobManifest(chunk=c, task={QUESTION!r}, chunk_id=i, task_id=0)
            for doc in context for i, c in enumerate(doc.split("\\n\\n"))]
```'''


def seeded_doc() -> LoadedDocument:
    parts = [f"Paragraph {i} talks about harbours, cranes and weather in general terms." for i in range(8)]
    parts[3], parts[5] = f"{WITNESS} {TRAVEL}", PATIENT
    return LoadedDocument(title="ledger.txt", text="\n\n".join(parts), pages=1)


def minions_remote(prompt: str) -> str:
    if "Write prepare_jobs now" in prompt:
        return CODE
    found = re.search(r"answer: (.+)", prompt)  # the supervisor takes the first minion answer as it reads it
    return final_json(answer=found.group(1).strip() if found else "unknown")


def minions_local(prompt: str) -> str:
    chunk = prompt.split('"""')[1]
    if "confirmed by John Smith" in chunk:
        return worker_json("John Smith", WITNESS, "John Smith (john.smith@example.com) confirmed it for account "
                                                  f"4111-2222-3333. {TRAVEL}")
    return worker_json(None, None, "not in this part")


def minion_remote(prompt: str) -> str:
    said = re.search(r"Local model: (.+)", prompt)
    if said:  # answers with the name as the local model's reply gave it
        name = re.match(r"(<PERSON_\d+>|[A-Z][a-z]+ [A-Z][a-z]+)", said.group(1))
        return json.dumps({"decision": "provide_final_answer", "answer": name.group(1) if name else "?", "message": None})
    return json.dumps({"decision": "request_additional_info", "answer": None, "message": QUESTION})


def minion_local(prompt: str) -> str:
    return ("John Smith confirmed it; reach him at john.smith@example.com or +1 415-555-0134 (account 4111-2222-3333). "
            + TRAVEL)


def reader(prompt: str) -> str:
    found = re.search(r"confirmed by (<PERSON_\d+>|[A-Z][a-z]+ [A-Z][a-z]+)", prompt)
    return found.group(1) if found else "unknown"


FAKES = {"minions": (minions_remote, minions_local), "minion": (minion_remote, minion_local),
         "remote-only": (reader, reader), "local-only": (reader, reader)}


@pytest.mark.parametrize("protocol", list(FAKES))
def test_no_seeded_pii_reaches_the_remote_model_and_the_answer_is_still_right(tmp_path, protocol):
    remote_fn, local_fn = FAKES[protocol]
    sent = {}
    for redact in ("pii", "off"):
        remote, local = PromptFake(responder=remote_fn), PromptFake(responder=local_fn)
        settings = RunSettings(protocol=protocol, redact=redact, chunk_tokens=40, max_chunk_chars=4000, sandbox="bwrap")
        result = run_minions([seeded_doc()], QUESTION, RunContext(settings=settings, models=FakeProvider(remote, local)),
                             checkpoint=tmp_path / redact)
        assert result.status == "answered" and result.answer == "John Smith", (redact, result.answer, result.notes)
        sent[redact] = ("\n".join(remote.prompts), result.usage)
    redacted, plain = sent["pii"][0], sent["off"][0]
    assert not [value for value in SEEDED + SEEDED_IDS if value in redacted]
    if protocol == "local-only":  # nothing goes to the remote model at all
        assert redacted == plain == ""
        return
    assert "John Smith" in plain and "<PERSON_1>" in redacted  # off, the name left; on, its placeholder
    assert [value for value in SEEDED_IDS if value in plain] == SEEDED_IDS  # off, each of them left
    for kind, n in (("IBAN_CODE", 1), ("US_PASSPORT", 1), ("IP_ADDRESS", 2)):
        assert len(set(re.findall(rf"<{kind}_\d+>", redacted))) == n, (kind, redacted)
    assert sent["off"][1].egress.document_chars > 0  # the ledger counts what left


def test_placeholders_are_consistent_and_restored():
    redactor = Redactor()
    first = redactor.redact(WITNESS)
    second = redactor.redact("Ask John Smith again, at john.smith@example.com.")
    assert first is not None and second is not None
    assert first.count("<PERSON_1>") == 1 and "<PERSON_1>" in second and "<EMAIL_ADDRESS_1>" in second
    assert "42" in first and not [v for v in SEEDED if v in first + second]
    assert restore(first, redactor.mapping) == WITNESS
    # a later redactor that starts from the run's mapping numbers a new person 2, the same one 1
    later = Redactor(redactor.mapping)
    assert later.redact(PATIENT) == (PATIENT.replace("Maria Garcia", "<PERSON_2>").replace("John Smith", "<PERSON_1>")
                                     .replace("884-22-1937", later_placeholder(later, "884-22-1937")))
    # revenue, years and places stay: questions are about them
    plain = "Revenue was $4,200,000 in 2025 at the Duluth facility."
    assert Redactor().redact(plain) == plain


def test_an_iban_a_passport_number_and_ip_addresses_leave_as_placeholders_and_come_back(tmp_path):
    """Remote-only with --redact pii: the remote model reads the travel sentence with a
    placeholder of its kind for each value, answers with the sentence as it read it, and
    the user gets the values back, character for character."""
    said = re.compile(r"His Passport No\.: [^;\s]+; he paid from IBAN .+? and signed in from \S+ and \S+(?=\.)")

    def reader(prompt: str) -> str:
        found = said.search(prompt)
        return found.group(0) if found else "unknown"

    remote = PromptFake(responder=reader)
    settings = RunSettings(protocol="remote-only", redact="pii")
    result = run_minions([seeded_doc()], "How did he pay and where did he sign in from?",
                         RunContext(settings=settings, models=FakeProvider(remote, PromptFake(responder=reader))),
                         checkpoint=tmp_path)
    (prompt,) = remote.prompts
    seen = said.search(prompt)
    assert seen and re.fullmatch(r"His Passport No\.: <US_PASSPORT_1>; he paid from IBAN <IBAN_CODE_1> and signed in "
                                 r"from <IP_ADDRESS_\d> and <IP_ADDRESS_\d>", seen.group(0)), prompt
    assert result.status == "answered" and result.answer == TRAVEL.removesuffix("."), result.answer


def later_placeholder(redactor: Redactor, value: str) -> str:
    return next(p for p, v in redactor.mapping.items() if v == value)


def test_the_redact_node_redacts_a_rounds_kept_outputs_and_extends_the_mapping():
    from minionflow.nodes.redact import make_redact

    kept = [{"job_id": "r1-j0003", "task": QUESTION, "answer": "John Smith", "citation": WITNESS,
             "explanation": "Maria Garcia saw it"}]
    update = make_redact()({"kept": kept, "redactions": {"<PERSON_1>": "Maria Garcia"}})
    (out,) = update["kept"]
    assert out["answer"] == "<PERSON_2>" and out["explanation"] == "<PERSON_1> saw it"
    assert out["task"] == QUESTION and not [v for v in SEEDED if v in json.dumps(out)]
    assert update["redactions"]["<PERSON_2>"] == "John Smith" and update["redactions"]["<PERSON_1>"] == "Maria Garcia"


def test_a_quote_cut_short_and_a_task_the_code_wrote_leak_nothing(tmp_path):
    """The quote is redacted whole and cut after (cut first, half an e-mail address is no
    longer one), and the tasks the supervisor's code wrote from the document are redacted
    too; the cut never splits a placeholder."""
    code = CODE.replace(f"task={QUESTION!r}", "task='Who confirmed the secret number for Maria Garcia?'")

    def remote(prompt: str) -> str:
        return code if "Write prepare_jobs now" in prompt else minions_remote(prompt)

    fakes = PromptFake(responder=remote), PromptFake(responder=minions_local)
    for cut in (12, 40, 70):  # inside the name, inside the e-mail address, inside the phone number
        settings = RunSettings(redact="pii", max_quote_chars=cut, chunk_tokens=40, max_chunk_chars=4000, sandbox="bwrap")
        result = run_minions([seeded_doc()], QUESTION, RunContext(settings=settings, models=FakeProvider(*fakes)),
                             checkpoint=tmp_path / str(cut))
        assert result.status == "answered" and result.answer == "John Smith", result.notes
    sent = "\n".join(fakes[0].prompts)
    assert not [v for v in [*SEEDED, "john.smith", "Smith", "415-555"] if v in sent]
    assert re.search(r"Who confirmed the secret number for <PERSON_\d>\?", sent)
    assert not re.search(r"<[A-Z_]*\s*\[\.\.\.\]", sent)  # no placeholder cut in half
