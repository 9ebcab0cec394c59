"""A broker user who may not read what the exporter reads, on real servers: the poll fails
(never a false 0), one WARNING names the user and what to grant, and granting exactly that,
live, brings the poll back with one INFO line and no restart. Redis ACL users; RabbitMQ users
and their permissions.

RabbitMQ 3.10 (the one installed here) answers a passive queue declare whatever the user's
permissions; only 4.2.6 and later refuse it (unit tests in test_poller.py cover that answer).
Here RabbitMQ refuses the event stream, whose queue the user may not configure.
"""

from __future__ import annotations

import json
import logging
import re

import pytest
import redis

from celery_exporter.config import redact_url
from celery_exporter.faults.classify import UUID
from tests.support.broker_checks import FAST, PASSWORD, assert_secret_absent, log_lines
from tests.support.exporter_process import ExporterFactory, ExporterProcess
from tests.support.polling import Polled, celery_app, publish
from tests.support.servers import RabbitMQServer, wait_for
from tests.support.stack import run_tool

pytestmark = pytest.mark.integration

# What the user lacks -> its ACL rules (besides the password), and the rules the WARNING must
# ask for. "open-*" is a queue the user may read in both cases.
LACKS = {
    "commands": (["+@all", "-llen", "-lindex", "~*", "&*"], ["+llen", "+lindex"]),
    "keys": (["+@all", "~open-*", "&*"], ["~jobs-{tag}*", "~unacked"]),
}


def outage_lines(caplog: pytest.LogCaptureFixture, level: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "celery_exporter.faults.outages" and r.levelname == level
    ]


@pytest.mark.parametrize("lacks", sorted(LACKS))
def test_redis_acl_user_refused_the_poll_is_told_and_recovers_when_granted_live(
    redis_url: str,
    polled: list[Polled],
    unique_name: str,
    lacks: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    user, jobs, other = f"monitor-{unique_name}", f"jobs-{unique_name}", f"open-{unique_name}"
    rules, wanted = LACKS[lacks]
    admin = redis.Redis.from_url(redis_url)
    admin.execute_command("ACL", "SETUSER", user, "reset", "on", f">{PASSWORD}", *rules)
    try:
        producer = celery_app(redis_url)
        publish(producer, jobs, 3)
        publish(producer, other, 2)
        url = redis_url.replace("redis://", f"redis://{user}:{PASSWORD}@")
        p = Polled(url, queues=(jobs, other))
        polled.append(p)
        with caplog.at_level(logging.DEBUG, logger="celery_exporter"):
            for _ in range(3):
                p.poller.poll_queues()
            assert p.value("exporter_queue_poll_success") == 0
            assert p.length(jobs) is None  # not a false "empty"
            if lacks == "keys":
                assert p.length(other) == 2  # what it may read is still served
                assert p.value("queue_unacked_messages", queue_name=other) is None  # unknown
            warnings = outage_lines(caplog, "WARNING")
            assert len(warnings) == 1, warnings
            line = warnings[0]
            assert line.startswith(f"queue poll failing on broker {redact_url(url)}: "), line
            named = f"queues '{jobs}', '{other}'" if lacks == "commands" else f"queue '{jobs}'"
            assert f"Redis user '{user}' may not read {named}" in line, line
            grant = re.search(rf"ACL SETUSER {user} (.*); retrying until it works$", line)
            assert grant is not None, line
            assert grant.group(1).split() == [w.format(tag=unique_name) for w in wanted]
            assert PASSWORD not in caplog.text
            # The operator grants exactly what the line asks for, on the running server.
            admin.execute_command("ACL", "SETUSER", user, *grant.group(1).split())
            p.poller.poll_queues()
        assert p.value("exporter_queue_poll_success") == 1
        assert (p.length(jobs), p.length(other)) == (3, 2)
        assert p.value("queue_unacked_messages", queue_name=jobs) == 0
        assert len(outage_lines(caplog, "WARNING")) == 1
        infos = outage_lines(caplog, "INFO")
        assert len(infos) == 1 and infos[0].startswith("queue poll works again on broker"), infos
        producer.close()
    finally:
        admin.execute_command("ACL", "DELUSER", user)
        admin.close()


def daemon_line(exporter: ExporterProcess, level: str, words: str) -> str:
    """The message of the one `level` line holding `words`, once the exporter has logged it."""
    marker = f" {level} celery_exporter.faults.outages: "
    wait_for(lambda: words in exporter.log, 20, f"{words!r}\n{exporter.log}")
    found = [line for line in exporter.log.splitlines() if marker in line and words in line]
    assert len(found) == 1, exporter.log
    return found[0].split(marker, 1)[1]


def check_reason(url: str, name: str, *args: str) -> str:
    """What `celery-exporter check` says in its FAIL line for the broker check `name`."""
    result = run_tool("check", "--output", "json", "--broker-url", url,
                      "--events-window", "1", *args)  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    checks = json.loads(result.stdout)["checks"]
    failed = {c["name"]: c for c in checks if c["link"] == "broker" and c["status"] == "FAIL"}
    assert name in failed, checks
    assert PASSWORD not in result.stdout + result.stderr
    return str(failed[name]["reason"])


RETRIED = "; retrying until it works"


def test_redis_check_says_the_daemons_line_and_the_daemon_recovers_live(
    redis_url: str,
    unique_name: str,
    exporter_factory: ExporterFactory,
) -> None:
    user, jobs = f"monitor-{unique_name}", f"jobs-{unique_name}"
    admin = redis.Redis.from_url(redis_url)
    admin.execute_command("ACL", "SETUSER", user, "reset", "on", f">{PASSWORD}",
                          "+@all", "-llen", "-lindex", "~*", "&*")  # fmt: skip
    try:
        url = redis_url.replace("redis://", f"redis://{user}:{PASSWORD}@")
        exporter = exporter_factory(url, *FAST, "--queues", jobs)
        line = daemon_line(exporter, "WARNING", "queue poll failing on broker")
        assert line.endswith(f"ACL SETUSER {user} +llen +lindex{RETRIED}"), line
        assert check_reason(url, "queue lengths", "--queues", jobs) + RETRIED == line
        assert exporter.value("celery_exporter_queue_poll_success") == 0
        assert exporter.value("celery_queue_length", queue_name=jobs) is None
        admin.execute_command("ACL", "SETUSER", user, "+llen", "+lindex")
        exporter.wait_value("celery_exporter_queue_poll_success", {}, lambda v: v == 1)
        assert exporter.value("celery_queue_length", queue_name=jobs) == 0
        daemon_line(exporter, "INFO", "queue poll works again on broker")
        assert_secret_absent(exporter, PASSWORD)
    finally:
        admin.execute_command("ACL", "DELUSER", user)
        admin.close()


def test_rabbitmq_check_says_the_daemons_line_and_set_permissions_live_recovers(
    rabbitmq_server: RabbitMQServer, unique_name: str, exporter_factory: ExporterFactory
) -> None:
    """Permissions that match nothing: the event stream may not declare its queue. (Queue
    lengths still read on 3.10, which does not check passive declares.)"""
    user, jobs = f"monitor-{unique_name}", f"jobs-{unique_name}"
    rabbitmq_server.ctl("add_user", user, PASSWORD)
    try:
        rabbitmq_server.ctl("set_permissions", "-p", "/", user, "", "", "")
        producer = celery_app(rabbitmq_server.url)
        publish(producer, jobs, 2)
        producer.close()
        url = f"amqp://{user}:{PASSWORD}@127.0.0.1:{rabbitmq_server.port}//"
        exporter = exporter_factory(url, *FAST, "--queues", jobs, wait=False)
        line = daemon_line(exporter, "WARNING", "events failing on broker")
        hint = f"(rabbitmqctl set_permissions -p / {user} CONFIGURE WRITE READ){RETRIED}"
        assert f"RabbitMQ user '{user}' may not use " in line and line.endswith(hint), line
        # The same line, but for the id of the event queue each connection declares.
        reason = check_reason(url, "event stream", "--queues", jobs)
        assert UUID.sub("<id>", reason + RETRIED) == UUID.sub("<id>", line)
        exporter.wait_value("celery_exporter_queue_poll_success", {}, lambda v: v == 1)
        assert exporter.value("celery_queue_length", queue_name=jobs) == 2
        assert exporter.value("celery_exporter_broker_up") == 0
        rabbitmq_server.ctl("set_permissions", "-p", "/", user, ".*", ".*", ".*")
        exporter.wait_value("celery_exporter_broker_up", {}, lambda v: v == 1)
        daemon_line(exporter, "INFO", "events works again on broker")
        assert len(log_lines(exporter, "WARNING")) == 1, exporter.log
        assert_secret_absent(exporter, PASSWORD)
    finally:
        rabbitmq_server.ctl("delete_user", user)
