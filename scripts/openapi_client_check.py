"""Drives a live hub through the Python client generated from openapi/openapi.json.

Run by scripts/openapi-clients.sh with the generated `tcphub_client` package on
PYTHONPATH:

    openapi_client_check.py HTTP_ADDR TCP_ADDR TOKEN

Raw TCP clients stand in for devices. Every answer is parsed by the generated
models and checked exactly: send, broadcast, list, get, kick, a 404 problem,
a send that waits for the device's ack, the metrics text, the events
replayed from GET /events with Last-Event-ID, read as the webhook's EventBatch,
and groups and bulk sends.
"""

import datetime
import json
import socket
import sys
import threading

import httpx

from tcphub_client import AuthenticatedClient
from tcphub_client.api.clients import (
    broadcast,
    get_client,
    kick_client,
    list_clients,
    send_bulk,
    send_to_client,
)
from tcphub_client.api.groups import get_group, list_groups, send_to_group, set_client_groups
from tcphub_client.api.events import follow_events
from tcphub_client.api.operations import healthz, metrics
from tcphub_client.models import (
    Acked,
    BroadcastResult,
    BulkItem,
    BulkRequest,
    BulkResult,
    BulkStatus,
    ClientAckedEvent,
    ClientConnectedEvent,
    ClientDisconnectedEvent,
    ClientList,
    ClientNamedEvent,
    ClientView,
    Condition,
    EventBatch,
    GroupList,
    GroupSet,
    GroupView,
    MessageEnvelope,
    Problem,
    ProblemCode,
    Queued,
    Status,
    Wait,
)

PATIENCE = 20  # seconds any one step may take


class Device:
    """A raw TCP client of the hub, synced under `name`."""

    def __init__(self, addr, name):
        host, port = addr.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=PATIENCE)
        self.lines = self.sock.makefile("rb")
        self.send({"type": "sync", "clientName": name})
        welcome = self.recv()
        assert welcome["type"] == "welcome" and welcome["clientName"] == name, welcome
        self.id = welcome["id"]

    def send(self, frame):
        self.sock.sendall(json.dumps(frame).encode() + b"\n")

    def recv(self):
        line = self.lines.readline()
        assert line, "the hub closed the connection"
        return json.loads(line)

    def expect_eof(self):
        assert self.lines.readline() == b"", "expected the hub to close the connection"


def equal(got, want, what):
    assert got == want, f"{what}: got {got!r}, want {want!r}"


def problem(status, code, title, detail):
    return Problem.from_dict(
        {
            "type": f"urn:tcphub:problem:{code}",
            "title": title,
            "status": status,
            "detail": detail,
            "code": code,
        }
    )


def replay(api, after, count):
    """The first `count` events after id `after`, parsed from GET /events."""
    request = follow_events._get_kwargs(last_event_id=str(after))
    events, sse_ids = [], []
    with api.get_httpx_client().stream(**request) as response:
        equal(response.status_code, 200, "GET /events")
        sse_id = None
        for line in response.iter_lines():
            if line.startswith("id: "):
                sse_id = line[len("id: ") :]
            elif line.startswith("data: "):
                events.append(json.loads(line[len("data: ") :]))
                sse_ids.append(sse_id)
                if len(events) == count:
                    break
    return events, sse_ids


def start_following(api):
    """Opens GET /events once, so that the hub keeps events from now on."""
    with api.get_httpx_client().stream(**follow_events._get_kwargs()) as response:
        equal(response.status_code, 200, "GET /events")
        equal(next(response.iter_lines()), ": following", "the stream's first line")


def main(http_addr, tcp_addr, token):
    api = AuthenticatedClient(
        base_url=f"http://{http_addr}",
        token=token,
        timeout=httpx.Timeout(PATIENCE),
        raise_on_unexpected_status=True,
    )
    equal(healthz.sync(client=api), Status(status=Condition.OK), "healthz")
    start_following(api)

    one = Device(tcp_addr, "Client-1")
    two = Device(tcp_addr, "Client-2")

    page = list_clients.sync(client=api)
    assert isinstance(page, ClientList), page
    equal(page.total, 2, "total")
    equal([c.name for c in page.clients], ["Client-1", "Client-2"], "names")
    equal([c.id for c in page.clients], [one.id, two.id], "ids")
    for view in page.clients:
        assert isinstance(view.connected_at, datetime.datetime), view.connected_at
        equal(view.connected_at.utcoffset(), datetime.timedelta(0), "connectedAt offset")
    filtered = list_clients.sync(client=api, prefix="Client-2", limit=1)
    equal((filtered.total, [c.name for c in filtered.clients]), (1, ["Client-2"]), "prefix")

    view = get_client.sync(name="Client-1", client=api)
    assert isinstance(view, ClientView), view
    equal((view.id, view.name, view.frames_in, view.frames_out), (one.id, "Client-1", 1, 1), "view")

    queued = send_to_client.sync(
        name="Client-1", client=api, body=MessageEnvelope(message={"led": "on"})
    )
    assert isinstance(queued, Queued), queued
    equal(queued.queued, 1, "queued")
    want = {"type": "message", "id": queued.id, "scope": "direct", "message": {"led": "on"}}
    equal(one.recv(), want, "Client-1's direct message")

    result = broadcast.sync(client=api, body=MessageEnvelope(message="hello everyone"))
    assert isinstance(result, BroadcastResult), result
    equal((result.recipients, result.queued, result.dropped), (2, 2, 0), "broadcast")
    want = {"type": "message", "id": result.id, "scope": "broadcast", "message": "hello everyone"}
    equal(one.recv(), want, "Client-1's broadcast")
    equal(two.recv(), want, "Client-2's broadcast")

    # The device acks from its own thread while the send waits for that ack.
    pushed = {}

    def ack_next():
        pushed["frame"] = one.recv()
        one.send({"type": "ack", "id": pushed["frame"]["id"]})

    acker = threading.Thread(target=ack_next)
    acker.start()
    acked = send_to_client.sync(
        name="Client-1", client=api, body=MessageEnvelope(message=[1, 2]), wait=Wait.ACK, timeout=5000
    )
    acker.join(PATIENCE)
    assert isinstance(acked, Acked), acked
    equal((acked.acked, pushed["frame"]["id"]), (True, acked.id), "acked")
    equal(pushed["frame"]["message"], [1, 2], "the acked message")

    missing = get_client.sync_detailed(name="ghost", client=api)
    equal(missing.status_code, 404, "GET /clients/ghost")
    want = problem(404, "client_not_found", "Client not found", 'no live client is named "ghost"')
    equal(missing.parsed, want, "the 404 problem")
    equal(missing.parsed.code, ProblemCode.CLIENT_NOT_FOUND, "the 404 code")

    bad_id = follow_events.sync_detailed(client=api, last_event_id="soon")
    detail = "Last-Event-ID must be the id of an event (a number)"
    equal(bad_id.parsed, problem(400, "invalid_header", "Invalid header", detail), "bad Last-Event-ID")

    kicked = kick_client.sync_detailed(name="Client-2", client=api)
    equal(kicked.status_code, 204, "DELETE /clients/Client-2")
    equal(two.recv(), {"type": "bye", "reason": "kicked"}, "Client-2's bye")
    two.expect_eof()
    equal(list_clients.sync(client=api).total, 1, "total after the kick")

    text = metrics.sync(client=api)
    # Counted by the waiting send itself, before it answered.
    assert isinstance(text, str) and 'tcphub_ack_waits_total{outcome="acked"} 1\n' in text, text

    # Everything since the first follower, as a webhook would receive it.
    events, sse_ids = replay(api, after=0, count=6)
    batch = EventBatch.from_dict({"events": events, "missed": 0})
    equal([e.id for e in batch.events], [1, 2, 3, 4, 5, 6], "event ids")
    equal(sse_ids, ["1", "2", "3", "4", "5", "6"], "SSE ids")
    kinds = [(type(e), e.client_id, e.name) for e in batch.events[:4]]
    want = [
        (ClientConnectedEvent, one.id, None),
        (ClientNamedEvent, one.id, "Client-1"),
        (ClientConnectedEvent, two.id, None),
        (ClientNamedEvent, two.id, "Client-2"),
    ]
    equal(kinds, want, "the first four events")
    equal([e.old_name for e in batch.events[1:4:2]], [None, None], "oldName")
    # The ack (from Client-1's connection) and the kick (Client-2's) are
    # emitted by different connections, so either may come first.
    last = {type(e): e for e in batch.events[4:]}
    equal(set(last), {ClientAckedEvent, ClientDisconnectedEvent}, "the last two events")
    equal((last[ClientAckedEvent].name, last[ClientAckedEvent].message_id), ("Client-1", acked.id), "ack")
    equal((last[ClientDisconnectedEvent].name, last[ClientDisconnectedEvent].reason), ("Client-2", "kicked"), "kick")
    for event in batch.events:
        equal(event.time.utcoffset(), datetime.timedelta(0), "event time offset")

    check_groups_and_bulk(api, one)
    print("generated client: every call and model checked")


def check_groups_and_bulk(api, one):
    """Groups set over HTTP, a group send, the group listings and a bulk send."""
    groups = set_client_groups.sync(name="Client-1", client=api, body=GroupSet(groups=["kiosks", "floor-2"]))
    assert isinstance(groups, GroupSet), groups
    equal(groups.groups, ["floor-2", "kiosks"], "PUT groups")
    equal(one.recv(), {"type": "groups", "groups": ["floor-2", "kiosks"]}, "the groups frame")
    equal(get_client.sync(name="Client-1", client=api).groups, ["floor-2", "kiosks"], "Client.groups")

    listed = list_groups.sync(client=api, prefix="floor")
    assert isinstance(listed, GroupList), listed
    equal((listed.total, [(g.name, g.members) for g in listed.groups]), (1, [("floor-2", 1)]), "GET /groups")
    group = get_group.sync(group="kiosks", client=api)
    assert isinstance(group, GroupView), group
    equal((group.name, group.members, [c.name for c in group.clients]), ("kiosks", 1, ["Client-1"]), "GET /groups/kiosks")

    sent = send_to_group.sync(group="kiosks", client=api, body=MessageEnvelope(message={"screen": "off"}))
    assert isinstance(sent, BroadcastResult), sent
    equal((sent.recipients, sent.queued, sent.dropped), (1, 1, 0), "group send")
    want = {"type": "message", "id": sent.id, "scope": "group", "group": "kiosks", "message": {"screen": "off"}}
    equal(one.recv(), want, "Client-1's group message")

    body = BulkRequest(messages=[BulkItem(to=["Client-1", "ghost"], message=7)])
    bulk = send_bulk.sync(client=api, body=body)
    assert isinstance(bulk, BulkResult), bulk
    equal((bulk.queued, bulk.stored, bulk.not_found, bulk.backlogged), (1, 0, 1, 0), "bulk counts")
    statuses = [(r.to, r.status) for r in bulk.results]
    equal(statuses, [("Client-1", BulkStatus.QUEUED), ("ghost", BulkStatus.NOT_FOUND)], "bulk results")
    want = {"type": "message", "id": bulk.results[0].id, "scope": "direct", "message": 7}
    equal(one.recv(), want, "Client-1's bulk message")


if __name__ == "__main__":
    main(*sys.argv[1:4])
