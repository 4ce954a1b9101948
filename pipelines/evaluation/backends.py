"""Where ``raychat eval``'s replies come from: a model directory or a running server.

    replies = generate_local(model_dir, task, params, search_corpus, search_cfg)     # n texts per item
    replies = generate_http("http://localhost:8000/v1", task, params, model="sft")

- **Local**: the same path the post-training stages evaluate with (pipelines/chat_eval.py): one engine
  actor holding the model, with the calculator and (when the run has one) the search index as tools,
  fed through Ray Data; a task without tools never calls them.
- **HTTP**: any OpenAI-compatible server (raychat's own, vLLM, a hosted API), one chat completion per
  problem with ``n`` choices, several requests in flight. Only standard fields are sent, so a
  third-party server accepts them; raychat's server runs its search and calculator itself, as it
  does for any client. A reply is the message's text; tool calls a server ran are not part of it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from lm.engine import SamplingParams
from pipelines.errors import ConfigError
from pipelines.evaluation.tasks import Item, Task

log = logging.getLogger("raychat.eval")


def generate_local(
    model_dir: Path,
    task: Task,
    params: SamplingParams,
    search_corpus: Path | None = None,
    search_cfg: Any = None,
    eval_cfg: Any = None,
) -> list[list[str]]:
    from lm.chat_messages import text_of
    from pipelines.chat_eval import ChatSession
    from pipelines.sft.config import ChatEvalConfig

    settings = eval_cfg or ChatEvalConfig()
    with ChatSession(model_dir, settings, search_corpus=search_corpus, search=search_cfg) as session:
        prompts = [session.prompt_ids(item.messages) for item in task.items]
        samples = session.generate(prompts, params, tools=task.tools)
        return [[text_of(session.reply(s)) for s in per_item] for per_item in samples]


class ServerError(Exception):
    """The server refused or failed a request; the message says which and why."""


def generate_http(
    base_url: str,
    task: Task,
    params: SamplingParams,
    model: str | None = None,
    api_key: str | None = None,
    concurrency: int = 8,
    timeout_s: float = 300.0,
) -> tuple[str, list[list[str]]]:
    """(the model asked, n reply texts per item) from ``base_url``'s chat completions endpoint
    (``base_url`` as the OpenAI client takes it, ``.../v1``). Plain ``urllib``: no HTTP client
    library is needed to judge a server."""
    from pipelines.runtime import Progress

    api = _Api(base_url, api_key, timeout_s)
    model = model or _only_model(api)
    progress = Progress(f"generating ({model} at {base_url})", len(task.items) * params.n, "samples")
    lock = threading.Lock()

    def body(item: Item, n: int, seed: int | None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "model": model,
            "messages": item.messages,
            "n": n,
            "temperature": params.temperature,
            "max_tokens": params.max_tokens,
        }
        if seed is not None:  # only when asked for: a seed on every request would pin every sample
            out["seed"] = seed
        return out

    def ask(item: Item) -> list[str]:
        texts = _texts(api.call("/chat/completions", body(item, params.n, params.seed)), api)
        # servers that ignore n (Ollama's OpenAI layer, for one) answer once: ask again for the rest
        for j in range(len(texts), params.n):
            seed = None if params.seed is None else params.seed + j
            texts += _texts(api.call("/chat/completions", body(item, 1, seed)), api)[:1]
        with lock:
            progress.update(len(texts))
        return texts

    pool = ThreadPoolExecutor(max(1, concurrency))
    futures = [pool.submit(ask, item) for item in task.items]
    try:
        wait(futures, return_when=FIRST_EXCEPTION)
        return model, [f.result() for f in futures]
    finally:  # one failure ends the run: requests not yet sent are not sent (a hosted API bills them)
        pool.shutdown(wait=True, cancel_futures=True)


def _texts(answer: dict[str, Any], api: _Api) -> list[str]:
    """The choices' message texts in index order; a body of another shape is the server's error."""
    choices = answer.get("choices")
    if not isinstance(choices, list) or not all(isinstance(c, dict) for c in choices):
        raise ServerError(f"{api.base_url}/chat/completions: no list of choices in the answer")
    ordered = sorted(choices, key=lambda c: c.get("index") if isinstance(c.get("index"), int) else 0)
    texts = []
    for c in ordered:
        message = c.get("message")
        content = message.get("content") if isinstance(message, dict) else None
        texts.append(content if isinstance(content, str) else "")
    return texts


class _Api:
    """JSON over HTTP to an OpenAI-compatible base URL; every failure a ServerError naming the call."""

    def __init__(self, base_url: str, api_key: str | None, timeout_s: float) -> None:
        self.base_url, self.timeout_s = base_url.rstrip("/"), timeout_s
        self.headers = {"Content-Type": "application/json"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"

    def call(self, path: str, body: dict[str, Any] | None = None, tries: int = 4) -> dict[str, Any]:
        """The JSON object the server answers; a busy server (429, 5xx) or a dropped connection is
        tried again after 1, 2, 4 s (or its Retry-After), other errors at once are the user's."""
        import http.client
        import urllib.error
        import urllib.request

        url = self.base_url + path
        data = None if body is None else json.dumps(body).encode()
        for attempt in range(tries):
            request = urllib.request.Request(
                url, data=data, headers=self.headers, method="GET" if body is None else "POST"
            )
            wait = float(2**attempt)
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    answer = json.loads(response.read())
                if not isinstance(answer, dict):
                    raise ServerError(f"{url}: the answer is not a JSON object")
                return answer
            except urllib.error.HTTPError as e:
                error = ServerError(f"{url}: HTTP {e.code}: {_error_text(e.read())}{_hint(e.code, url)}")
                if e.code != 429 and e.code < 500:
                    raise error from None
                retry_after = e.headers.get("Retry-After") if e.headers else None
                if retry_after and retry_after.replace(".", "", 1).isdigit():
                    wait = min(float(retry_after), 60.0)
            except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
                if isinstance(e, http.client.InvalidURL):
                    raise ServerError(f"{url}: not a usable URL ({e})") from None
                error = ServerError(f"{url}: cannot reach the server ({getattr(e, 'reason', e)})")
                if isinstance(getattr(e, "reason", e), ConnectionRefusedError):  # nothing listens there
                    raise error from None
            except ValueError as e:
                raise ServerError(f"{url}: the answer is not JSON ({e})") from None
            if attempt + 1 < tries:
                log.info("%s; trying again in %.0f s", error, wait)
                time.sleep(wait)
        raise error


def _hint(code: int, url: str) -> str:
    if code == 404 and "/v1/" not in url:
        return " (an OpenAI-compatible server's base URL usually ends in /v1)"
    return ""


def _only_model(api: _Api) -> str:
    """The server's one model; with several, the user has to say which (``--served-model``)."""
    ids = [m.get("id") for m in api.call("/models").get("data") or [] if isinstance(m, dict)]
    if len(ids) != 1:
        listed = ", ".join(map(str, ids)) or "none"
        raise ConfigError(f"{api.base_url} serves {len(ids)} models ({listed}); name one with --served-model")
    return str(ids[0])


def _error_text(body: bytes) -> str:
    """The error message of an OpenAI-shaped error body, else the start of the body."""
    try:
        error = json.loads(body).get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
    except (ValueError, AttributeError):
        pass
    return body[:300].decode("utf-8", "replace")
