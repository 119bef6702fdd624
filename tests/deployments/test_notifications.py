"""Notifications are rows delivered by a real RQ worker; a failing webhook
never blocks or undoes the request."""

from __future__ import annotations

import http.server
import json
import threading

import django_rq
import pytest
from django.core import mail
from rq import SimpleWorker

from deployments.choices import Channel, DeliveryStatus, NotificationEvent
from deployments.models import Deployment, Notification
from tests.conftest import env


@pytest.fixture
def low_queue():
    queue = django_rq.get_queue("low")
    queue.empty()
    yield queue
    queue.empty()


def run_worker(queue) -> None:
    SimpleWorker([queue], connection=queue.connection).work(burst=True)


class Receiver(http.server.BaseHTTPRequestHandler):
    status = 200
    bodies: list = []

    def do_POST(self):  # noqa: N802 (http.server's naming)
        length = int(self.headers["Content-Length"])
        Receiver.bodies.append(json.loads(self.rfile.read(length)))
        self.send_response(Receiver.status)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def webhook():
    server = http.server.HTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Receiver.bodies, Receiver.status = [], 200
    yield f"http://127.0.0.1:{server.server_port}/hook"
    server.shutdown()


@pytest.mark.django_db(transaction=True)
def test_it_emails_approvers_and_posts_the_webhook(catalog, release, users, webhook, low_queue):
    staging = env(catalog, "staging")
    staging.webhook_url = webhook
    staging.save()
    deployment = Deployment.request(release, staging, users["alice"], "release 1.4.0")
    assert low_queue.count == 2  # enqueued after commit
    run_worker(low_queue)
    rows = {n.channel: n for n in Notification.objects.filter(deployment=deployment)}
    assert rows[Channel.EMAIL].status == DeliveryStatus.SENT
    assert rows[Channel.WEBHOOK].status == DeliveryStatus.SENT
    assert sorted(rows[Channel.EMAIL].recipients) == [
        "bob@example.com", "carol@example.com", "erin@example.com",
    ]  # fmt: skip
    assert "alice@example.com" not in rows[Channel.EMAIL].recipients
    assert mail.outbox[0].subject.startswith("Approval needed: fraud-detector 1.4.0")
    assert "release 1.4.0" in Receiver.bodies[0]["text"]

    deployment.approve(users["bob"])
    run_worker(low_queue)
    approved = Notification.objects.get(deployment=deployment, event=NotificationEvent.APPROVED,
                                        channel=Channel.EMAIL)  # fmt: skip
    assert approved.recipients == ["alice@example.com"]


@pytest.mark.django_db(transaction=True)
def test_a_failing_webhook_is_recorded_and_blocks_nothing(catalog, release, users, webhook,
                                                          low_queue):  # fmt: skip
    Receiver.status = 500
    staging = env(catalog, "staging")
    staging.webhook_url = webhook
    staging.save()
    deployment = Deployment.request(release, staging, users["alice"], "release")
    run_worker(low_queue)
    failed = Notification.objects.get(deployment=deployment, channel=Channel.WEBHOOK)
    assert failed.status == DeliveryStatus.FAILED
    assert "500" in failed.error and "127.0.0.1" not in failed.error
    deployment.approve(users["bob"])
    deployment.refresh_from_db()
    assert deployment.status == "queued"


@pytest.mark.django_db(transaction=True)
def test_an_unreachable_webhook_fails_quietly(catalog, release, users, low_queue):
    staging = env(catalog, "staging")
    staging.webhook_url = "http://127.0.0.1:9/hook"  # discard port: connection refused
    staging.save()
    deployment = Deployment.request(release, staging, users["alice"], "release")
    run_worker(low_queue)
    failed = Notification.objects.get(deployment=deployment, channel=Channel.WEBHOOK)
    assert failed.status == DeliveryStatus.FAILED and failed.error.startswith("ConnectionError")


def test_the_webhook_url_is_stored_encrypted(catalog):
    from django.db import connection

    staging = env(catalog, "staging")
    staging.webhook_url = "https://hooks.slack.com/services/T000/B000/secret"
    staging.save()
    with connection.cursor() as cursor:
        cursor.execute("SELECT webhook_url FROM environments_environment WHERE id=%s", [staging.pk])
        stored = cursor.fetchone()[0]
    assert "hooks.slack.com" not in stored
    assert env(catalog, "staging").webhook_url.endswith("/secret")
