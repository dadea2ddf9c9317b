"""agentfleet.dashboard's server, over real HTTP on loopback: the token, the Host check, read only,
the page's files, and readings pushed as server-sent events as they change."""

from __future__ import annotations

import http.client
import json
import threading

import pytest

from agentfleet.dashboard import LOOPBACK, Board, Dashboard

READING = {"fleet": "dev", "status": [{"name": "alpha"}], "overlaps": {"pairs": []}}


class Readings:
    """A fleet stand-in: each read returns the current value, and says when it was read."""

    def __init__(self) -> None:
        self.value = READING
        self.read = threading.Event()

    def __call__(self) -> dict:
        self.read.set()
        return self.value


@pytest.fixture
def dashboard():
    with Dashboard(Readings(), interval=0.05, token="secret-token") as running:
        yield running


def request(dashboard: Dashboard, path: str, method: str = "GET", host: str | None = None):
    connection = http.client.HTTPConnection(LOOPBACK, dashboard.server.server_address[1], timeout=10)
    connection.putrequest(method, path, skip_host=True)
    connection.putheader("Host", host or dashboard.host)
    connection.endheaders()
    response = connection.getresponse()
    return response, response.read()


def test_it_listens_on_loopback_only_and_prints_a_url_with_the_token(dashboard):
    assert dashboard.server.server_address[0] == "127.0.0.1"
    assert dashboard.url == f"http://127.0.0.1:{dashboard.server.server_address[1]}/?token=secret-token"
    assert len(Dashboard(Readings()).token) >= 32  # random by default


def test_the_page_and_the_reading_need_the_token(dashboard):
    page, body = request(dashboard, "/?token=secret-token")
    assert page.status == 200 and b'<table id="status">' in body
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    for path in ("/", "/?token=wrong", "/reading", "/events?token=secret-tokenX"):
        assert request(dashboard, path)[0].status == 403
    response, body = request(dashboard, "/reading?token=secret-token")
    assert response.status == 200 and json.loads(body)["status"] == [{"name": "alpha"}]
    assert request(dashboard, "/app.js")[0].status == 200  # the page's own files hold no data


def test_another_host_name_is_refused_even_with_the_token(dashboard):
    """A page elsewhere that rebinds its DNS name to 127.0.0.1 sends its own name as Host."""
    assert request(dashboard, "/reading?token=secret-token", host="evil.example:80")[0].status == 403
    assert request(dashboard, "/app.js", host=f"evil.example:{dashboard.server.server_address[1]}")[0].status == 403


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_it_is_read_only(dashboard, method):
    response, _ = request(dashboard, "/reading?token=secret-token", method)
    assert response.status == 405 and response.headers["Allow"] == "GET, HEAD"


def test_each_new_reading_is_an_event(dashboard):
    connection = http.client.HTTPConnection(LOOPBACK, dashboard.server.server_address[1], timeout=10)
    connection.request("GET", "/events?token=secret-token")
    response = connection.getresponse()
    assert response.headers["Content-Type"] == "text/event-stream"
    first = json.loads(response.readline().removeprefix(b"data: "))
    assert first["status"] == [{"name": "alpha"}] and first["taken"].endswith("Z")
    assert response.readline() == b"\n"
    dashboard._read.value = {**READING, "status": [{"name": "alpha"}, {"name": "beta"}]}
    second = json.loads(response.readline().removeprefix(b"data: "))
    assert [agent["name"] for agent in second["status"]] == ["alpha", "beta"]
    connection.close()


def test_an_unchanged_reading_is_no_news():
    board = Board()
    board.publish(READING)
    board.publish(dict(READING))
    assert board.version == 1 and board.newer_than(1, 0.01) is None
    board.publish({**READING, "fleet": "other"})
    assert board.newer_than(1, 0.01)[0] == 2
