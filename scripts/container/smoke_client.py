"""TCP client for the container smoke test.

Registers a name with the hub, then reports each milestone the smoke test waits
for as one line on stdout: REGISTERED <session id>, DELIVERED <message id>
<message>, BYE <reason>, CLOSED. Anything unexpected is reported as UNEXPECTED <frame>
and ends the client with a non-zero status, so the driving script can tell a
wrong frame from a missing one.
"""

import argparse
import json
import socket
import sys


def report(line: str) -> None:
    print(line, flush=True)


def frames(sock: socket.socket):
    """Yields each newline-terminated JSON frame the hub sends, then returns at EOF."""
    buffer = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            if line.strip():
                yield json.loads(line)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds to wait for any one frame")
    args = parser.parse_args()

    sock = socket.create_connection((args.host, args.port), timeout=args.timeout)
    sock.sendall(json.dumps({"type": "sync", "clientName": args.name}).encode() + b"\n")

    expected = "welcome"
    try:
        for frame in frames(sock):
            kind = frame.get("type")
            if expected == "welcome" and kind == "welcome" and frame.get("clientName") == args.name:
                report(f"REGISTERED {frame.get('id')}")
                expected = "message"
            elif expected == "message" and kind == "message" and frame.get("scope") == "direct":
                report(f"DELIVERED {frame.get('id')} {json.dumps(frame.get('message'))}")
                expected = "bye"
            elif expected == "bye" and kind == "bye":
                report(f"BYE {frame.get('reason')}")
                expected = "eof"
            else:
                report(f"UNEXPECTED {json.dumps(frame)}")
                return 1
    except socket.timeout:
        report(f"UNEXPECTED silence for {args.timeout:.0f}s while waiting for {expected}")
        return 1
    except OSError as error:
        report(f"UNEXPECTED {error} while waiting for {expected}")
        return 1
    if expected != "eof":
        report(f"UNEXPECTED end of stream while waiting for {expected}")
        return 1
    report("CLOSED")
    return 0


if __name__ == "__main__":
    sys.exit(main())
