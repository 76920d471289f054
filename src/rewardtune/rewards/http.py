"""A reward served over HTTP: POST {"prompts": [...], "responses": [...], "columns": {...}}
-> {"scores": [...]}; ``columns`` maps each data column to one value per response.

Secrets stay out of files: the URL and header values may name environment variables
(``Bearer ${RM_TOKEN}``), filled in at each call and never stored on the object.

A server that fails in a way that can pass (5xx, 408, 429, a timeout, a dropped connection,
a body that is not JSON) is retried (``retries``); one that answers a request error (other
4xx) or the wrong scores is not. Excerpts of its replies are made terminal-safe.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from typing import ClassVar, Literal

from pydantic import Field, SerializationInfo, field_serializer

from rewardtune.config.base import is_public
from rewardtune.rewards.registry import RewardBase, reward_type
from rewardtune.text import REDACTED, fill_env, one_line, redact_url, redact_value
from rewardtune.types import RewardtuneError


@reward_type
class HttpSpec(RewardBase):  # the server gets prompts and responses apart: no `input`
    type: Literal["http"]
    url: str  # ${ENV} is filled in at call time; user-info and query values are never written
    headers: dict[str, str] = Field(default_factory=dict)  # values may name ${ENV} variables
    timeout_s: float = Field(30.0, gt=0)  # bounds each whole call, not each socket read
    retries: int = Field(2, ge=0)
    retry_backoff_s: float = Field(1.0, ge=0)  # waits backoff, 2*backoff, 4*backoff, ...

    summary: ClassVar = ("url",)

    @field_serializer("url")
    def _public_url(self, url: str, info: SerializationInfo) -> str:
        return redact_url(url) if is_public(info) else url

    @field_serializer("headers")
    def _public_headers(self, headers: dict[str, str], info: SerializationInfo) -> dict[str, str]:
        return {k: redact_value(v) for k, v in headers.items()} if is_public(info) else headers

    def scorer(self, where: str) -> HttpReward:
        return HttpReward(self.url, self.timeout_s, headers=self.headers, where=where)


class HttpReward:
    def __init__(
        self,
        url: str,
        timeout_s: float = 30.0,
        name: str = "http",
        headers: dict[str, str] | None = None,
        where: str = "reward",
    ):
        self.url, self.timeout_s, self.name = url, timeout_s, name
        self.headers = dict(headers or {})
        self.where = where
        if REDACTED in url or REDACTED in self.headers.values():
            raise RewardtuneError(
                f"{where}: the url or headers hold {REDACTED} (secrets are never written to "
                "config.yaml); pass the secret through an environment variable, e.g. "
                "headers: {Authorization: 'Bearer ${RM_TOKEN}'}, or --set the url again"
            )
        self._request()  # an unset ${VARIABLE} is a mistake found before anything runs

    def _request(self, body: bytes = b"") -> urllib.request.Request:
        headers = {k: fill_env(v, f"{self.where}.headers.{k}") for k, v in self.headers.items()}
        return urllib.request.Request(
            fill_env(self.url, f"{self.where}.url"),
            data=body,
            headers={"Content-Type": "application/json", **headers},
            method="POST",
        )

    def __call__(
        self, prompts: list[str], responses: list[str], columns: dict | None = None
    ) -> list[float]:
        body = json.dumps(
            {"prompts": prompts, "responses": responses, "columns": columns or {}}, default=str
        ).encode()
        payload = call_within(self.timeout_s, lambda: self._post(self._request(body)))
        scores = payload.get("scores") if isinstance(payload, dict) else payload
        if not isinstance(scores, list):
            raise RewardtuneError(
                f"reward server {redact_url(self.url)} answered {one_line(json.dumps(payload), 80)}"
                ', not {"scores": [...]} or a list: fix the server'
            )
        return scores

    def _post(self, request: urllib.request.Request):
        """The parsed JSON reply; a request error (4xx but 408 and 429) is a RewardtuneError,
        which is not retried; other failures raise for a retry."""
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                body = response.read()
        except urllib.error.HTTPError as err:
            reply = one_line(err.read().decode("utf-8", "replace"), 80)
            if 400 <= err.code < 500 and err.code not in (408, 429):
                raise RewardtuneError(
                    f"reward server {redact_url(self.url)} answered HTTP {err.code} "
                    f"({reply!r}), a request error that retries cannot fix: check the url, the "
                    "headers and the server"
                ) from None
            raise OSError(f"HTTP {err.code} ({reply!r})") from None
        try:
            return json.loads(body)
        except ValueError:  # a proxy's error page, half a body: it can pass
            raise ValueError(
                f"the reply is not JSON: {one_line(body.decode('utf-8', 'replace'), 80)!r}"
            ) from None


def call_within(timeout_s: float, fn):
    """``fn()``, or TimeoutError when the whole call takes longer than ``timeout_s`` (urllib's
    own timeout bounds each socket read, so a server that trickles bytes never trips it).
    The abandoned call runs on in a daemon thread until its socket times out."""
    result: dict = {}

    def run() -> None:
        try:
            result["value"] = fn()
        except BaseException as err:  # handed to the caller's thread
            result["error"] = err

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise TimeoutError(f"no complete answer within timeout_s={timeout_s}")
    if "error" in result:
        raise result["error"]
    return result["value"]
