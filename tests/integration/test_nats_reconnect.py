"""A client of shared.natsutil through a server that accepts connections and then fails the
handshake (restarting, overloaded): it gets back to the real nats-server, and each attempt it
gave up on is closed, not left open until the garbage collector finds it."""

from __future__ import annotations

import asyncio
import contextlib

from shared.embedded_nats import EmbeddedNats
from shared.natsutil import connect
from tests.integration.waiting import until


class StallingProxy:
    """Forwards to nats-server, or (``stalling``) accepts and says nothing, as a server that
    is not ready yet does. Remembers which stalled connections their client closed."""

    def __init__(self, upstream: str) -> None:
        host, _, port = upstream.split("://", 1)[-1].rpartition(":")
        self.upstream = (host, int(port))
        self.stalling = False
        self.stalled: list[asyncio.Event] = []
        self.forwarded: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return f"nats://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if self.stalling:
                closed = asyncio.Event()
                self.stalled.append(closed)
                while await reader.read(4096):  # until the client closes its end
                    pass
                closed.set()
                return
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
            self.forwarded += (writer, up_writer)
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        except OSError:
            pass
        finally:
            writer.close()

    def sever(self) -> None:
        """Drop every forwarded connection, as a server that goes away does."""
        for w in self.forwarded:
            w.close()
        self.forwarded.clear()

    async def stop(self) -> None:
        self.sever()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


async def test_attempts_given_up_during_a_reconnect_are_closed(nats_server: EmbeddedNats) -> None:
    proxy = StallingProxy(nats_server.url)
    url = await proxy.start()
    nc = await connect(url, "reconnecting", connect_timeout_s=0.5)
    try:
        proxy.stalling = True
        proxy.sever()
        await until(lambda: len(proxy.stalled) >= 3, 20)  # three handshakes timed out
        proxy.stalling = False
        await until(lambda: nc.is_connected, 20)
        await nc.flush(timeout=5)  # the real server answers through the new connection
        given_up = proxy.stalled[:-1] if not proxy.stalled[-1].is_set() else proxy.stalled
        # Each attempt the client gave up on was closed by the client while it kept running.
        await until(lambda: all(closed.is_set() for closed in given_up), 5)
    finally:
        await nc.close()
        await proxy.stop()
    await until(lambda: all(closed.is_set() for closed in proxy.stalled), 5)
