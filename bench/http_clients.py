"""CPU per POST of the HTTP clients the reply path could use, side by side against one local keep-alive server.

    python -m bench.http_clients             # 5,000 sendText-sized POSTs per client, two rounds

Why ``wsm/core/http_client.py`` is on libcurl: each reply is two calls to WAHA and one router delivery, so a
client's own CPU per call is paid three times per message. The server is a minimal asyncio HTTP/1.1 responder in
its own process (so its CPU is not counted); each client keeps one connection open; the figure is this process's
CPU time per call (``time.process_time``), with the wall time beside it.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import multiprocessing
import socket
import time
from collections.abc import Callable

import click
import urllib3

from infra.platform.redis_server import free_port
from wsm.core.http_client import CurlClient, Urllib3Client

ANSWER = b'{"id":"true_5511988887777@c.us_3EB0C767D26A"}'
RESPONSE = b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
    len(ANSWER),
    ANSWER,
)
BODY = json.dumps({"session": "default", "chatId": "5511988887777@c.us", "text": "Olá! Em que posso ajudar?"}).encode()
HEADERS = {"Accept": "application/json", "Content-Type": "application/json"}


class Responder(asyncio.Protocol):
    """Answers every complete request with the same 201 (reads Content-Length; no chunked bodies)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport, self.buffer = transport, b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            length = 0
            for line in self.buffer[:end].split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length :]
            self.transport.write(RESPONSE)  # type: ignore[attr-defined]


def serve(port: int) -> None:
    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Responder, "127.0.0.1", port)
        await server.serve_forever()

    asyncio.run(main())


def clients(url: str) -> dict[str, Callable[[], object]]:
    """One call of each client: POST the body, read the answer, parse its JSON."""
    host, port = url.removeprefix("http://").split(":")
    curl, fallback = CurlClient(url, HEADERS, 30), Urllib3Client(url, HEADERS, 30)
    pool = urllib3.connection_from_url(url, maxsize=4)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    sock = socket.create_connection((host, int(port)))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    raw = b"POST /api/sendText HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
    request = raw % (len(BODY), BODY)

    def plain() -> object:
        conn.request("POST", "/api/sendText", body=BODY, headers=HEADERS)
        return json.loads(conn.getresponse().read())

    def pooled() -> object:
        return json.loads(pool.urlopen("POST", "/api/sendText", body=BODY, headers=HEADERS).data)

    def socket_only() -> object:
        sock.sendall(request)
        return json.loads(sock.recv(65536).partition(b"\r\n\r\n")[2])

    return {
        "wsm CurlClient (pycurl)": lambda: json.loads(curl.request("POST", "/api/sendText", BODY).body),
        "wsm Urllib3Client": lambda: json.loads(fallback.request("POST", "/api/sendText", BODY).body),
        "urllib3 pool, bare": lambda: json.loads(
            pool.urlopen("POST", "/api/sendText", body=BODY, headers=HEADERS).data
        ),
        "http.client": plain,
        "raw socket (a floor)": socket_only,
    }


@click.command()
@click.option("--calls", default=5000, show_default=True)
@click.option("--rounds", default=2, show_default=True)
def main(calls: int, rounds: int) -> None:
    """Print each client's CPU and wall time per call, round by round."""
    port = free_port()
    server = multiprocessing.Process(target=serve, args=(port,), daemon=True)
    server.start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port)).close()
                break
            except OSError:
                time.sleep(0.05)
        for round_ in range(1, rounds + 1):
            for name, call in clients(f"http://127.0.0.1:{port}").items():
                call()
                cpu, wall = time.process_time(), time.perf_counter()
                for _ in range(calls):
                    call()
                cpu_us = (time.process_time() - cpu) * 1e6 / calls
                wall_us = (time.perf_counter() - wall) * 1e6 / calls
                click.echo(f"round {round_}  {name:26s} CPU {cpu_us:6.1f} µs/call   wall {wall_us:6.1f} µs/call")
    finally:
        server.terminate()


if __name__ == "__main__":
    main()
