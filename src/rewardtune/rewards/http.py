"""A reward served over HTTP: POST {"prompts": [...], "responses": [...]} -> {"scores": [...]}."""

from __future__ import annotations

import json
import urllib.request


class HttpReward:
    def __init__(self, url: str, timeout_s: float = 30.0, name: str = "http"):
        self.url, self.timeout_s, self.name = url, timeout_s, name

    def __call__(self, prompts: list[str], responses: list[str]) -> list[float]:
        body = json.dumps({"prompts": prompts, "responses": responses}).encode()
        request = urllib.request.Request(
            self.url, data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
            payload = json.loads(response.read())
        return payload["scores"] if isinstance(payload, dict) else payload
