#!/usr/bin/env python3
"""Unfinished request heads from one address, and what they cost the server (issue 22, 6).

Opens SOCKETS TCP connections to a gateway from one source address, each sending the start of
an upgrade request followed by HEAD_BYTES of one header and never the blank line that ends the
head; then waits until the server has answered or closed every socket (or --hold seconds). The
server's resident memory (VmRSS of --server-pid) is sampled every 100 ms throughout. Prints,
as one JSON object: RSS before, at its peak and after; how each socket ended (an HTTP status,
closed without an answer, refused at connect, or still open at the end of the hold); and how
long the last one took.

Loopback only: the target must be a loopback address (this is an attack, run it against your
own server). Mind the open-files limit of both processes (`ulimit -n`).

    scripts/bench/head-flood.py --target 127.0.0.1:18090 --sockets 1500 --head-bytes 122880 \
        --server-pid "$SERVER_PID"
"""

import argparse
import asyncio
import ipaddress
import json
import socket
import time


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


async def flood_one(host, port, source, head_bytes, hold, outcomes):
    started = time.monotonic()
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.bind((source, 0))
        await asyncio.get_running_loop().sock_connect(sock, (host, port))
        reader, writer = await asyncio.open_connection(sock=sock)
    except OSError as error:
        outcomes.append(("refused at connect: " + type(error).__name__, time.monotonic() - started))
        return
    head = (f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nX-Padding: ")
    try:
        writer.write(head.encode() + b"a" * head_bytes)
        await writer.drain()
    except OSError:
        pass  # the server may close before all of it is taken; the read below says how it ended
    try:
        answer = await asyncio.wait_for(reader.read(64), timeout=hold)
        if answer.startswith(b"HTTP/1.1 "):
            outcome = "HTTP " + answer[9:12].decode()
        else:
            outcome = "closed without an answer"
    except asyncio.TimeoutError:
        outcome = "still open at the end of the hold"
    except OSError:
        outcome = "closed without an answer"
    outcomes.append((outcome, time.monotonic() - started))
    writer.close()


async def sample(pid, samples, stop):
    while not stop.is_set():
        samples.append(rss_kib(pid))
        await asyncio.sleep(0.1)


async def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", required=True, help="HOST:PORT of the gateway (loopback)")
    parser.add_argument("--source", default="127.0.0.1", help="the one source address (default 127.0.0.1)")
    parser.add_argument("--sockets", type=int, default=1500)
    parser.add_argument("--head-bytes", type=int, default=120 * 1024)
    parser.add_argument("--hold", type=float, default=10.0, help="seconds to wait for each socket's end")
    parser.add_argument("--server-pid", type=int, required=True)
    args = parser.parse_args()
    host, port = args.target.rsplit(":", 1)
    if not ipaddress.ip_address(host).is_loopback or not ipaddress.ip_address(args.source).is_loopback:
        parser.error("target and source must be loopback addresses")

    samples, stop, outcomes = [], asyncio.Event(), []
    before = rss_kib(args.server_pid)
    sampler = asyncio.create_task(sample(args.server_pid, samples, stop))
    started = time.monotonic()
    await asyncio.gather(*(flood_one(host, int(port), args.source, args.head_bytes, args.hold, outcomes)
                           for _ in range(args.sockets)))
    elapsed = time.monotonic() - started
    await asyncio.sleep(1)
    stop.set()
    await sampler
    after = rss_kib(args.server_pid)
    counts = {}
    for outcome, _ in outcomes:
        counts[outcome] = counts.get(outcome, 0) + 1
    print(json.dumps({
        "sockets": args.sockets,
        "head_bytes": args.head_bytes,
        "rss_mib": {"before": round(before / 1024, 1), "peak": round(max(samples + [before]) / 1024, 1),
                    "after": round(after / 1024, 1)},
        "outcomes": counts,
        "slowest_end_s": round(max(duration for _, duration in outcomes), 2),
        "elapsed_s": round(elapsed, 2),
    }))


if __name__ == "__main__":
    asyncio.run(main())
