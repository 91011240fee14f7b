"""The ceiling: the least any referral intake can do on this machine, served like pharmref.

A bare ASGI app (no framework, no validation, no auth) that, for any POST, parses the JSON body
and inserts one row into PostgreSQL with a durable commit, then answers 201 with the row's id. It
runs under the same uvicorn (`--workers N`, uvloop, httptools) against the same database, so
pharmref's figures can be read as a fraction of what the HTTP stack, the JSON parser and one
committed INSERT allow. GET /healthz answers 200 for the start-up check.

    PHARMREF_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/bench \\
        .venv/bin/python -m uvicorn ceiling:app --app-dir bench --workers 2 --port 8766
"""

import asyncio
import os
import uuid
from typing import Any

import orjson
import psycopg

POOL_SIZE = int(os.environ.get("CEILING_POOL_SIZE", "16"))
CREATE = """
CREATE TABLE IF NOT EXISTS ceiling_referral (
    id uuid PRIMARY KEY,
    body jsonb NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
)
"""
INSERT = "INSERT INTO ceiling_referral (id, body) VALUES (%s, %s)"


def _dsn() -> str:
    url = os.environ["PHARMREF_DATABASE_URL"]
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


class Pool:
    """A fixed set of autocommit connections handed out through a queue (one worker process)."""

    def __init__(self) -> None:
        self.idle: asyncio.Queue[psycopg.AsyncConnection[Any]] = asyncio.Queue()

    async def open(self) -> None:
        for _ in range(POOL_SIZE):
            connection = await psycopg.AsyncConnection.connect(_dsn(), autocommit=True)
            self.idle.put_nowait(connection)
        connection = await self.idle.get()
        try:
            await connection.execute(CREATE)
        finally:
            self.idle.put_nowait(connection)

    async def insert(self, body: Any) -> uuid.UUID:
        row_id = uuid.uuid4()
        connection = await self.idle.get()
        try:
            await connection.execute(INSERT, (row_id, psycopg.types.json.Jsonb(body)))
        finally:
            self.idle.put_nowait(connection)
        return row_id


pool = Pool()


async def _read_body(receive: Any) -> bytes:
    chunks = []
    more = True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(chunks)


async def _answer(send: Any, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await pool.open()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["method"] == "GET":
        await _answer(send, 200, b'{"status":"ok"}')
        return
    raw = await _read_body(receive)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        await _answer(send, 400, b'{"error":"bad-json"}')
        return
    row_id = await pool.insert(body)
    await _answer(send, 201, orjson.dumps({"id": str(row_id)}))
