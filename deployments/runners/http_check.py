"""`http_check` steps: poll health URLs until each answers 2xx, then optionally
send one smoke request (seed 002's `POST /predict` with a JSON body).

Config::

    {"urls": ["https://staging.example.com/health/ready"],   # default: the environment's
     "timeout_seconds": 120, "interval_seconds": 5, "request_timeout_seconds": 5,
     "smoke": {"url": "https://staging.example.com/predict", "method": "POST",
               "json": {"amount": 120.5, "merchant": "m-1"},
               "expect_status": 200, "expect_keys": ["fraud_probability"]}}
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from urllib.parse import urlsplit

from deployments.runners.base import Runner, StepContext, StepFailed
from portal.cloud.process import Deadline

USER_AGENT = "gantry-deploy/1 (http_check)"


def _check_url(key: str, url: str) -> str:
    """Checked once `${…}` references are filled in, so at run time: a step failure."""
    if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
        raise StepFailed(f"{key}: {url!r} is not an http(s) URL")
    return url


def fetch(url: str, timeout: float, method: str = "GET", body: dict | None = None):
    """One request; returns (status, body text) or (None, reason) if unreachable."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("User-Agent", USER_AGENT)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read(65536).decode("utf-8", "replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read(65536).decode("utf-8", "replace")
    except (urllib.error.URLError, OSError) as error:
        return None, str(getattr(error, "reason", error))


class HttpCheckRunner(Runner):
    kind = "http_check"

    def run(self, ctx: StepContext) -> dict:
        config = self.config(ctx)
        urls = [_check_url("urls", u) for u in ctx.expand(config["urls"] or ctx.health_urls)]
        if not urls and not config["smoke"]:
            raise StepFailed("No URLs to check: set urls, or the environment's health URLs.")
        deadline = Deadline(config["timeout_seconds"])
        results = {}
        for url in urls:
            results[url] = self._wait_for_2xx(ctx, url, deadline, config)
        outputs = {"checked": results}
        if config["smoke"]:
            outputs["smoke"] = self._smoke(ctx, config["smoke"], config["request_timeout_seconds"])
        return outputs

    def _wait_for_2xx(self, ctx: StepContext, url: str, deadline: Deadline, config: dict) -> int:
        attempts, last = 0, None
        while True:
            ctx.check_cancelled()
            attempts += 1
            timeout = max(min(config["request_timeout_seconds"], deadline.remaining), 0.1)
            status, text = fetch(url, timeout)
            outcome = f"HTTP {status}" if status is not None else f"unreachable ({text})"
            if outcome != last:
                ctx.log(f"GET {url} → {outcome}")
                last = outcome
            if status is not None and 200 <= status < 300:
                return status
            if deadline.passed:
                raise StepFailed(
                    f"{url} did not answer 2xx within {deadline.seconds:g} s "
                    f"({attempts} attempts; last: {outcome})."
                )
            ctx.sleep(min(config["interval_seconds"], max(deadline.remaining, 0)))

    def _smoke(self, ctx: StepContext, smoke: dict, timeout: float) -> dict:
        url = _check_url("smoke.url", ctx.expand(smoke["url"]))
        status, text = fetch(url, timeout, smoke["method"], ctx.expand(smoke["json"]))
        ctx.log(f"{smoke['method']} {url} → HTTP {status}")
        if status != smoke["expect_status"]:
            raise StepFailed(
                f"Smoke request {smoke['method']} {url} answered {status or text}, "
                f"expected {smoke['expect_status']}."
            )
        missing = []
        if smoke["expect_keys"]:
            try:
                answer = json.loads(text)
            except ValueError:
                raise StepFailed(f"Smoke request {url} did not answer JSON.") from None
            missing = [
                k for k in smoke["expect_keys"] if not isinstance(answer, dict) or k not in answer
            ]
        if missing:
            raise StepFailed(f"Smoke request {url} answered without {', '.join(missing)}.")
        return {"url": url, "status": status}
