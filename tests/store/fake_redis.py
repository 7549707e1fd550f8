"""A fake Redis server on a real socket that answers every data command with one error reply.

For replies the shared Redis must not be driven into (out of memory, refused writes after a
failed save, a read-only replica): the store talks RESP over TCP to this server exactly as to
Redis. Connection set-up commands succeed; ``MULTI`` and ``EXEC`` behave as Redis does when a
queued command was refused (``EXEC`` aborts the transaction).
"""

from __future__ import annotations

import asyncio
import contextlib

_SETUP = {b"CLIENT", b"SELECT", b"PING", b"AUTH", b"READONLY"}

# What Redis 7 answers to ``HELLO 3`` (redis-py opens every connection with it).
_HELLO_3 = (
    b"%7\r\n"
    b"$6\r\nserver\r\n$5\r\nredis\r\n"
    b"$7\r\nversion\r\n$6\r\n7.0.15\r\n"
    b"$5\r\nproto\r\n:3\r\n"
    b"$2\r\nid\r\n:1\r\n"
    b"$4\r\nmode\r\n$10\r\nstandalone\r\n"
    b"$4\r\nrole\r\n$6\r\nmaster\r\n"
    b"$7\r\nmodules\r\n*0\r\n"
)


async def _read_command(reader: asyncio.StreamReader) -> list[bytes]:
    header = await reader.readuntil(b"\r\n")
    if not header.startswith(b"*"):
        raise ValueError(f"not a RESP array: {header!r}")
    parts = []
    for _ in range(int(header[1:-2])):
        size = await reader.readuntil(b"\r\n")
        parts.append((await reader.readexactly(int(size[1:-2]) + 2))[:-2])
    return parts


class ErrorRedis:
    """Listens on 127.0.0.1:``port``; every data command gets ``-{error}``."""

    def __init__(self, error: str) -> None:
        self.error = error
        self.commands: list[list[bytes]] = []
        self._server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> ErrorRedis:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), 1)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _reply(self, command: list[bytes]) -> bytes:
        name = command[0].upper()
        if name == b"HELLO":
            return _HELLO_3
        if name in _SETUP or name == b"MULTI":
            return b"+OK\r\n"
        if name == b"EXEC":
            return b"-EXECABORT Transaction discarded because of previous errors.\r\n"
        return f"-{self.error}\r\n".encode()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                command = await _read_command(reader)
                self.commands.append(command)
                writer.write(self._reply(command))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
