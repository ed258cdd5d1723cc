"""Chat completions from an OpenAI-compatible HTTP server (``vllm serve``, an inference provider).

Each conversation is one POST to ``{base_url}/chat/completions`` asking for ``n`` choices; when a
server returns fewer, the rest are asked for in further requests (each with the next seed). Up to
``max_concurrency`` requests are in flight at once (threads). 429, 5xx, timeouts and connection
errors are retried ``max_retries`` times with exponential backoff (a ``Retry-After`` header is
honoured); any other error fails the call.

A conversation that ends with an assistant message is a prefill: it is sent as it is, with vLLM's
``continue_final_message: true, add_generation_prompt: false`` (servers other than vLLM may reject
or ignore these). The request carries ``seed`` (``SamplingParams.seed``) unless ``send_seed`` is
false. (vLLM's CPU build serves seeded requests only with chunked prefill off:
``--no-enable-chunked-prefill --max-num-batched-tokens <max-model-len>``.)

With ``cache_dir``, every answered request is stored as one JSON file named by a hash of the
model name, the messages, the sampling settings and the index of its first sample, written
atomically; a rerun (a resumed stage) reads it instead of asking again. The API key is read from
the environment variable ``api_key_env`` and goes only into the Authorization header: never into
the cache, logs or exception messages.

``usage`` counts requests, retries, failures, cache hits and the server's prompt/completion tokens;
it is logged at :meth:`close`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm.auto import tqdm

from ifplay.generation.backends.base import Backend, Conversation, SamplingParams

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 409, 425, 429}) | frozenset(range(500, 600))


class OpenAIError(RuntimeError):
    """A request the server refused or that failed after every retry."""


class OpenAIBackend(Backend):
    name = "openai"

    def __init__(self, model_path: str, batch_size: int = 16, max_prompt_tokens: int = 2048,
                 threads: int | None = None, *, base_url: str = "http://127.0.0.1:8000/v1",
                 api_key_env: str | None = "OPENAI_API_KEY", model: str | None = None, max_concurrency: int = 8,
                 max_retries: int = 5, timeout: float = 600.0, cache_dir: str | None = None,
                 send_seed: bool = True, backoff: float = 1.0, max_backoff: float = 60.0):
        import requests

        self.requests = requests
        self.url = base_url.rstrip("/") + "/chat/completions"
        # the served model's name; `vllm serve DIR` serves DIR under its path
        self.model = model or model_path
        self.max_concurrency = max(1, int(max_concurrency))
        self.max_retries = max(0, int(max_retries))
        self.timeout = float(timeout)
        self.send_seed = send_seed
        self.backoff, self.max_backoff = float(backoff), float(max_backoff)
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.api_key_env = api_key_env
        self._key = os.environ.get(api_key_env) if api_key_env else None
        if api_key_env and not self._key:
            log.info("environment variable %s is not set: requests carry no API key", api_key_env)
        self._local = threading.local()
        self._lock = threading.Lock()
        self.usage = {"requests": 0, "retries": 0, "failures": 0, "cache_hits": 0,
                      "prompt_tokens": 0, "completion_tokens": 0}
        if max_prompt_tokens:
            log.debug("max_prompt_tokens is not enforced by the HTTP backend (the server applies its own limit)")

    def __repr__(self) -> str:  # no key here, ever
        return f"OpenAIBackend(url={self.url!r}, model={self.model!r})"

    # -- plumbing ---------------------------------------------------------------------------
    def _session(self):
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = self.requests.Session()
            if self._key:
                session.headers["Authorization"] = f"Bearer {self._key}"
        return session

    def _redact(self, text: str) -> str:
        return text.replace(self._key, "[API KEY]") if self._key else text

    def _count(self, **amounts) -> None:
        with self._lock:
            for name, amount in amounts.items():
                self.usage[name] += amount

    def _body(self, conversation: Conversation, params: SamplingParams, n: int, offset: int) -> dict:
        body = {"model": self.model, "messages": [{"role": m["role"], "content": m["content"]} for m in conversation],
                "n": n, "max_tokens": params.max_new_tokens}
        if params.greedy:
            body.update(temperature=0.0, top_p=1.0)
        else:
            body.update(temperature=params.temperature, top_p=params.top_p)
        if params.stop:
            body["stop"] = list(params.stop)
        if self.send_seed:
            body["seed"] = params.seed + offset
        if conversation[-1]["role"] == "assistant":  # prefill (vLLM's chat template arguments)
            body.update(continue_final_message=True, add_generation_prompt=False)
        return body

    def _cache_path(self, body: dict, offset: int, seed: int) -> Path | None:
        if self.cache_dir is None:
            return None
        # the sampling seed keys the entry even when it is not sent (a new seed asks for new samples)
        key = json.dumps({"body": body, "offset": offset, "seed": seed}, sort_keys=True, ensure_ascii=False)
        digest = hashlib.sha256(key.encode()).hexdigest()
        return self.cache_dir / digest[:2] / f"{digest}.json"

    def _post(self, body: dict) -> dict:
        """One request with retries; the parsed JSON answer."""
        requests = self.requests
        for attempt in range(self.max_retries + 1):
            wait, problem = None, None
            try:
                response = self._session().post(self.url, json=body, timeout=self.timeout)
            except (requests.Timeout, requests.ConnectionError) as err:
                problem = f"{type(err).__name__}"
            else:
                if response.status_code == 200:
                    self._count(requests=1)
                    return response.json()
                text = self._redact(response.text[:500])
                if response.status_code not in RETRY_STATUS:
                    self._count(requests=1, failures=1)
                    raise OpenAIError(f"{self.url} answered {response.status_code}: {text}")
                problem = f"HTTP {response.status_code}: {text}"
                retry_after = response.headers.get("Retry-After")
                if retry_after and retry_after.replace(".", "", 1).isdigit():
                    wait = float(retry_after)
            self._count(requests=1)
            if attempt == self.max_retries:
                self._count(failures=1)
                raise OpenAIError(f"{self.url}: giving up after {self.max_retries + 1} attempts ({problem})")
            wait = min(self.max_backoff, wait if wait is not None else self.backoff * 2 ** attempt)
            log.warning("request failed (%s); retry %d/%d in %.1fs", problem, attempt + 1, self.max_retries, wait)
            self._count(retries=1)
            time.sleep(wait)
        raise AssertionError("unreachable")

    def _request(self, conversation: Conversation, params: SamplingParams, n: int, offset: int) -> list[str]:
        """Up to ``n`` completions (samples ``offset``...), from the cache when there."""
        body = self._body(conversation, params, n, offset)
        path = self._cache_path(body, offset, params.seed)
        if path is not None and path.is_file():
            self._count(cache_hits=1)
            return json.loads(path.read_text())["completions"]
        answer = self._post(body)
        choices = sorted(answer.get("choices", []), key=lambda c: c.get("index", 0))
        completions = [(c.get("message") or {}).get("content") or "" for c in choices]
        usage = answer.get("usage") or {}
        self._count(prompt_tokens=usage.get("prompt_tokens") or 0, completion_tokens=usage.get("completion_tokens") or 0)
        if path is not None and completions:
            path.parent.mkdir(parents=True, exist_ok=True)
            record = {"request": body, "completions": completions, "usage": usage}
            with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False, encoding="utf-8") as fh:
                json.dump(record, fh, ensure_ascii=False)
            os.replace(fh.name, path)
        return completions

    def _complete(self, conversation: Conversation, params: SamplingParams) -> list[str]:
        want = 1 if params.greedy else params.n  # greedy answers repeat: ask once
        out: list[str] = []
        while len(out) < want:
            got = self._request(conversation, params, want - len(out), len(out))
            if not got:
                raise OpenAIError(f"{self.url} returned no choices")
            out += got[:want - len(out)]
        out = [params.cut(text) for text in out]
        return out * params.n if params.greedy else out

    # -- the interface ----------------------------------------------------------------------
    def chat(self, conversations: list[Conversation], params: SamplingParams,
             progress: str | None = None) -> list[list[str]]:
        results: list[list[str] | None] = [None] * len(conversations)
        bar = tqdm(total=len(conversations), desc=progress, unit="prompt", disable=progress is None)

        def work(i: int) -> None:
            results[i] = self._complete(conversations[i], params)
            bar.update(1)

        pool = ThreadPoolExecutor(max_workers=self.max_concurrency)
        try:
            for future in [pool.submit(work, i) for i in range(len(conversations))]:
                future.result()
        finally:  # on a failure, requests not yet sent are dropped (answered ones are cached)
            pool.shutdown(wait=True, cancel_futures=True)
            bar.close()
        return results

    def close(self) -> None:
        log.info("openai backend usage: %s", json.dumps(self.usage, sort_keys=True))
