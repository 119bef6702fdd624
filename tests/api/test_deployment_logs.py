"""GET /api/v1/deployments/<id>/logs/?after=SEQ — the log panel's polling fallback."""

from __future__ import annotations

import pytest

from deployments.models import Deployment, LogLine, StepRun
from tests.api.conftest import request_deployment

HTML = "<script>alert(1)</script>"


def url(deployment, after=None) -> str:
    query = "" if after is None else f"?after={after}"
    return f"/api/v1/deployments/{deployment.pk}/logs/{query}"


@pytest.fixture
def deployment(release, users) -> Deployment:
    return request_deployment(release, users)


def test_it_returns_the_lines_after_a_seq_in_order(api, deployment):
    step = StepRun.objects.create(deployment=deployment, order=1, name="migrate", kind="command")
    # Stored as LogWriter stores them (its flusher thread cannot see this test's transaction).
    LogLine.objects.create(deployment=deployment, seq=1, text="before any step")
    for n in range(1, 5):
        LogLine.objects.create(deployment=deployment, seq=n + 1, step=step, text=f"line {n}",
                               stream="stderr" if n == 4 else "stdout")  # fmt: skip
    LogLine.objects.create(deployment=deployment, seq=6, step=step, text=HTML)
    response = api("dave").get(url(deployment, after=2))
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "awaiting_approval"
    assert [line["seq"] for line in body["lines"]] == [3, 4, 5, 6]
    assert [line["text"] for line in body["lines"]] == ["line 2", "line 3", "line 4", HTML]
    first = body["lines"][0]
    assert set(first) == {"seq", "step", "stream", "text", "at"}
    assert first["step"] == "migrate" and first["stream"] == "stdout"
    assert body["lines"][2]["stream"] == "stderr"
    # Raw text: escaping is the browser's job (the panel sets textContent).
    assert body["lines"][-1]["text"] == HTML
    everything = api("dave").get(url(deployment)).json()["lines"]
    assert everything[0] == {**everything[0], "seq": 1, "step": "", "text": "before any step"}


def test_it_returns_at_most_1000_lines_per_call(api, deployment):
    LogLine.objects.bulk_create(
        LogLine(deployment=deployment, seq=n, text=f"line {n}") for n in range(1500, 0, -1)
    )
    client = api("dave")
    first = client.get(url(deployment, after=0)).json()["lines"]
    assert [line["seq"] for line in first] == list(range(1, 1001))
    rest = client.get(url(deployment, after=1000)).json()["lines"]
    assert [line["seq"] for line in rest] == list(range(1001, 1501))
    assert client.get(url(deployment, after=1500)).json()["lines"] == []


def test_it_only_returns_its_own_deployments_lines(api, deployment, release, users):
    other = request_deployment(release, users, slug="dev")
    LogLine.objects.create(deployment=other, seq=1, text="other")
    LogLine.objects.create(deployment=deployment, seq=1, text="mine")
    assert [line["text"] for line in api("dave").get(url(deployment)).json()["lines"]] == ["mine"]


@pytest.mark.parametrize("after", ["-1", "abc", "1.5", "99999999999"])
def test_it_names_a_bad_after(api, deployment, after):
    response = api("dave").get(url(deployment, after=after))
    assert response.status_code == 400
    assert "after" in response.json()


def test_it_hides_the_deployment_from_outsiders(api, deployment):
    LogLine.objects.create(deployment=deployment, seq=1, text="secret-ish")
    response = api("mallory").get(url(deployment))
    assert response.status_code == 404
    assert "secret-ish" not in response.content.decode()


def test_it_answers_404_for_an_unknown_id(api, catalog):
    assert api("dave").get("/api/v1/deployments/999999/logs/").status_code == 404


def test_it_refuses_anonymous_callers(anonymous, deployment):
    assert anonymous.get(url(deployment)).status_code == 401


def test_it_refuses_other_methods(api, deployment):
    assert api("alice").post(url(deployment), {}, format="json").status_code == 405
    assert not LogLine.objects.filter(deployment=deployment).exists()


def test_a_signed_in_browser_may_poll_it(client, users, deployment):
    LogLine.objects.create(deployment=deployment, seq=1, text="hello")
    client.force_login(users["dave"])
    assert client.get(url(deployment)).json()["lines"][0]["text"] == "hello"
