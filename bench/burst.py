#!/usr/bin/env python3
"""A connection burst from one address against a running Switchboard: N Engine.IO polling
handshakes at once (each a TCP connection of its own), counted by answer; then the server's
RSS and admission metrics. Targets 127.0.0.1 only; stops by itself.

    bench/burst.py [--port 8880] [--connections 10000] [--pid PID]

Start the server first, e.g.:
    target/release/switchboard serve --data-dir memory --set max_connections_per_ip=50 \
        --set handshake_rate_per_ip=20 --set handshake_burst_per_ip=200
"""
import argparse
import asyncio
import collections
import resource
import time
import urllib.request

REQUEST = b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"


async def one(port, results, sem):
    async with sem:
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
            w.write(REQUEST)
            await w.drain()
            head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 10)
            results[head.split(b" ", 2)[1].decode()] += 1
            w.close()
        except Exception as e:  # noqa: BLE001 - counted, not raised
            results[type(e).__name__] += 1


def rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=8880)
    ap.add_argument("--connections", type=int, default=10000)
    ap.add_argument("--concurrency", type=int, default=2000)
    ap.add_argument("--pid", type=int)
    a = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    before = rss_kb(a.pid) if a.pid else None
    results = collections.Counter()
    sem = asyncio.Semaphore(a.concurrency)
    t0 = time.monotonic()
    await asyncio.gather(*(one(a.port, results, sem) for _ in range(a.connections)))
    secs = time.monotonic() - t0
    after = rss_kb(a.pid) if a.pid else None
    print(f"connections: {a.connections} from 127.0.0.1 in {secs:.2f} s ({a.connections / secs:.0f}/s)")
    for k, v in sorted(results.items()):
        print(f"  answer {k}: {v}")
    if before is not None:
        print(f"server RSS: {before / 1024:.1f} MB before, {after / 1024:.1f} MB after")
    with urllib.request.urlopen(f"http://127.0.0.1:{a.port}/metrics") as m:
        for line in m.read().decode().splitlines():
            if line.startswith(("switchboard_connections_refused_total", "switchboard_admitted_connections",
                                "switchboard_limit_tracked_addresses")):
                print(" ", line)


asyncio.run(main())
