"""Three tcphub nodes on one nats-server behind a real HAProxy, on loopback.

Starts the processes, runs HAProxy with deploy/cluster/haproxy.cfg (its
addresses turned into loopback ports, every other setting as shipped), and
checks what an operator relies on:
  1. devices connecting through the balancer spread over the nodes, and each is
     listed and reachable through every node's API and through the balancer's;
  2. a rolling restart: one node drains (SIGTERM), its devices get
     bye/shutdown, reconnect through the balancer to the others, and are
     addressable again; the time that takes is printed.
Any failure exits non-zero with a message; every process is stopped on exit.

Usage: haproxy_check.py <tcphub binary> <nats-server binary> <haproxy.cfg>
"""

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

DEVICES = 12
PATIENCE = 20.0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(port, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=data, method=method,
        headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def fail(message):
    print(f"FAIL {message}", file=sys.stderr)
    sys.exit(1)


def wait_for(what, check, patience=PATIENCE):
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.05)
    fail(f"{what} did not happen within {patience} s")


class Device:
    """A device that connects through the balancer and answers like the
    article's clients: newline-free JSON, one sync."""

    def __init__(self, name, port):
        self.name, self.port = name, port
        self.frames = asyncio.Queue()

    async def connect(self):
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writer.write(json.dumps({"type": "sync", "clientName": self.name}).encode())
        await self.writer.drain()
        self.frames = asyncio.Queue()
        self.task = asyncio.ensure_future(self.read())
        welcome = await self.next()
        if welcome.get("type") == "eof":
            raise ConnectionError("closed before welcome")
        if welcome.get("type") != "welcome":
            fail(f"{self.name}: expected welcome, got {welcome}")

    async def read(self):
        buffer = b""
        while True:
            chunk = await self.reader.read(65536)
            if not chunk:
                await self.frames.put({"type": "eof"})
                return
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                await self.frames.put(json.loads(line))

    async def next(self):
        try:
            return await asyncio.wait_for(self.frames.get(), PATIENCE)
        except asyncio.TimeoutError:
            fail(f"{self.name}: no frame within {PATIENCE} s")


def haproxy_config(shipped, lb_tcp, lb_http, hubs):
    """The shipped configuration with loopback addresses."""
    text = open(shipped).read()
    text = text.replace("bind :9000", f"bind 127.0.0.1:{lb_tcp}")
    text = text.replace("bind :8080", f"bind 127.0.0.1:{lb_http}")
    text = text.replace("check port 8080 ", "check ")
    for n, hub in enumerate(hubs, start=1):
        text = text.replace(f"server hub-{n} hub-{n}:9000",
                            f"server hub-{n} 127.0.0.1:{hub['tcp']} port {hub['http']}")
        text = text.replace(f"server hub-{n} hub-{n}:8080",
                            f"server hub-{n} 127.0.0.1:{hub['http']}")
    # A health check on another port than the traffic's is `check port N`.
    text = re.sub(r"(server hub-\d 127\.0\.0\.1:\d+) port (\d+)", r"\1 check port \2", text)
    settings = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    if "hub-1:" in settings or ":9000" in settings or ":8080" in settings:
        fail("the shipped haproxy.cfg no longer has the shape this check rewrites")
    return text


async def main(tcphub, nats_server, shipped):
    work = tempfile.mkdtemp(prefix="tcphub-haproxy-")
    processes = []

    def start(args, **kwargs):
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kwargs)
        processes.append(process)
        return process

    try:
        nats_port = free_port()
        start([nats_server, "-js", "-sd", f"{work}/js", "-a", "127.0.0.1", "-p", str(nats_port)])
        wait_for("nats-server listening", lambda: socket.create_connection(("127.0.0.1", nats_port)).close() or True)
        hubs = []
        for n in (1, 2, 3):
            hub = {"tcp": free_port(), "http": free_port(), "name": f"hub-{n}"}
            hub["process"] = start([
                tcphub, "--tcp-addr", f"127.0.0.1:{hub['tcp']}", "--http-addr", f"127.0.0.1:{hub['http']}",
                "--node-name", hub["name"], "--cluster-nats-url", f"nats://127.0.0.1:{nats_port}",
                "--shutdown-grace", "5"])
            hubs.append(hub)
        for hub in hubs:
            wait_for(f"{hub['name']} sees 3 nodes",
                     lambda hub=hub: len(http(hub["http"], "GET", "/nodes")[1]["nodes"]) == 3)
        lb_tcp, lb_http = free_port(), free_port()
        config = f"{work}/haproxy.cfg"
        with open(config, "w") as f:
            f.write(haproxy_config(shipped, lb_tcp, lb_http, hubs))
        check = subprocess.run(["haproxy", "-c", "-f", config], capture_output=True, text=True)
        if check.returncode != 0:
            fail(f"haproxy -c: {check.stdout}{check.stderr}")
        start(["haproxy", "-f", config, "-db"])
        wait_for("HAProxy listening", lambda: socket.create_connection(("127.0.0.1", lb_tcp)).close() or True)
        # Until its health checks pass a server takes no traffic.
        wait_for("every hub healthy behind HAProxy", lambda: http(lb_http, "GET", "/readyz")[0] == 200)

        devices = [Device(f"dev-{i}", lb_tcp) for i in range(DEVICES)]
        for device in devices:
            await device.connect()
        status, listed = http(hubs[0]["http"], "GET", "/clients?named=true")
        nodes = {client["node"] for client in listed["clients"]}
        if listed["total"] != DEVICES or len(nodes) < 2:
            fail(f"devices not spread over the nodes: {listed}")
        print(f"PASS {DEVICES} devices through HAProxy spread over {len(nodes)} nodes")

        for port, via in [(hub["http"], hub["name"]) for hub in hubs] + [(lb_http, "the balancer")]:
            for device in devices:
                status, body = http(port, "POST", f"/clients/{device.name}/send", {"message": via})
                if status != 202:
                    fail(f"send to {device.name} via {via}: {status} {body}")
                frame = await device.next()
                if frame.get("message") != via or frame.get("id") != body["id"]:
                    fail(f"{device.name} via {via}: got {frame}, answer {body}")
        print("PASS every device reached through every node's API and through the balancer")

        # Rolling restart of hub-1: its devices reconnect through the balancer.
        leaving = hubs[0]
        _, mine = http(leaving["http"], "GET", "/clients?named=true")
        node_id = next(node["id"] for node in http(leaving["http"], "GET", "/nodes")[1]["nodes"]
                       if node["name"] == leaving["name"])
        movers = [d for d in devices if any(c["name"] == d.name and c["node"] == node_id for c in mine["clients"])]
        if not movers:
            fail("hub-1 holds no device to move")
        started = time.monotonic()
        leaving["process"].send_signal(signal.SIGTERM)
        for device in movers:
            frame = await device.next()
            if frame != {"type": "bye", "reason": "shutdown"}:
                fail(f"{device.name}: expected bye shutdown, got {frame}")
            if (await device.next())["type"] != "eof":
                fail(f"{device.name}: the draining node did not close the connection")
        if leaving["process"].wait(timeout=PATIENCE) != 0:
            fail("the draining node did not exit 0")
        for device in movers:
            # Reconnect with a short back-off, as a device would.
            while True:
                try:
                    await device.connect()
                    break
                except (ConnectionError, OSError):
                    await asyncio.sleep(0.1)
        survivor = hubs[1]["http"]
        for device in movers:
            status, body = http(survivor, "POST", f"/clients/{device.name}/send", {"message": "back"})
            if status != 202 or (await device.next()).get("message") != "back":
                fail(f"{device.name} not addressable after reconnecting: {status} {body}")
        took = time.monotonic() - started
        print(f"PASS rolling restart: {len(movers)} devices moved off hub-1 and were addressable "
              f"again {took:.2f} s after its SIGTERM")
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    if len(sys.argv) != 4:
        fail(__doc__)
    asyncio.run(main(*sys.argv[1:]))
