"""An SES v2 stand-in for benchmarks and fault tests: lean, configurable, and it keeps count.

A small HTTP/1.1 server (an :class:`asyncio.Protocol`, keep-alive, no web framework, so its
own CPU stays a small share of a benchmark — it reports that share) answering the two SES v2
calls Déclic makes, the way boto3 expects them (rest-json protocol):

- ``POST /v2/email/outbound-emails`` — `SendEmail`_: ``{"MessageId": ...}`` and an
  ``x-amzn-RequestId`` header;
- ``GET /v2/email/account`` — `GetAccount`_: ``SendQuota`` and the sending flags.

Latency is a timer (``loop.call_later``), so waiting costs no CPU. Faults are drawn per
SendEmail request from a seeded generator, by ratio:

- ``throttle`` — 429 ``TooManyRequestsException`` (the error type goes in the
  ``x-amzn-ErrorType`` header, which botocore's rest-json parser reads first);
- ``error_5xx`` — 500 ``InternalFailure``;
- ``timeout`` — no answer until the client gives up (nothing accepted);
- ``accept_hang`` — the message *is* accepted and recorded, then no answer: the ambiguous case;
- ``max_rate`` — recipients per second enforced by a token bucket (one second of burst); over
  it, 429 "Maximum sending rate exceeded." as SES answers.

Every accepted message is recorded (time, MessageId, EmailTags — ``send_id`` among them —
and the recipient count). The control API lives under ``/_standin/``: ``GET stats``,
``POST config`` (a JSON object of :class:`Faults` fields), ``POST reset`` and ``GET accepted``
(JSON lines, ``?after=N`` skips the first N).

Run it in-process (:class:`StandIn`, a thread with its own loop, for tests) or as a process,
``python -m declic.standin --port 0 --latency-ms 50`` (:class:`StandInProcess`, for benchmarks,
so its CPU is measured apart from the workers').

.. _SendEmail: https://docs.aws.amazon.com/ses/latest/APIReference-V2/API_SendEmail.html
.. _GetAccount: https://docs.aws.amazon.com/ses/latest/APIReference-V2/API_GetAccount.html
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import secrets
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, fields
from email.utils import formatdate
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from declic.processes import ManagedProcess, ProcessStartError

SEND_PATH = "/v2/email/outbound-emails"
ACCOUNT_PATH = "/v2/email/account"
CONTROL = "/_standin/"
READY = "standin listening on "
_MAX_HEAD = 64 * 1024
_MAX_BODY = 50 * 1024 * 1024  # SES v2 allows 40 MB messages; base64 in JSON is a bit more
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 413: "Payload Too Large", 429: "Too Many Requests",
            500: "Internal Server Error"}


@dataclass
class Faults:
    """What the stand-in does to SendEmail requests; ratios are per request, from 0 to 1."""

    latency_ms: float = 0.0
    throttle: float = 0.0
    error_5xx: float = 0.0
    timeout: float = 0.0
    accept_hang: float = 0.0
    max_rate: float = 0.0  # recipients per second; 0 is unlimited
    hang_s: float = 60.0  # how long a timeout or a hang keeps the connection silent
    seed: int = 0
    max_24h: float = 1_000_000.0  # GetAccount's Max24HourSend

    def update(self, changes: dict[str, Any]) -> None:
        """Apply a JSON object of field changes; unknown names are refused by name."""
        known = {f.name: f for f in fields(self)}
        unknown = sorted(set(changes) - set(known))
        if unknown:
            raise ValueError(f"unknown fault setting(s): {', '.join(unknown)}")
        for name, value in changes.items():
            setattr(self, name, int(value) if name == "seed" else float(value))


@dataclass(frozen=True)
class Accepted:
    """One message the stand-in accepted (``hung``: accepted, then never answered).

    ``t`` is when the answer is sent (arrival plus the latency): SES's acceptance as its client
    sees it. A hung message's ``t`` is its arrival.
    """

    t: float
    message_id: str
    recipients: int
    tags: dict[str, str]
    hung: bool = False

    @property
    def send_id(self) -> str | None:
        return self.tags.get("send_id")


@dataclass
class _Reply:
    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()
    delay_s: float = 0.0
    hang: bool = False


def _error(status: int, code: str, message: str, delay_s: float = 0.0) -> _Reply:
    # rest-json errors: botocore takes the code from x-amzn-ErrorType and the message from the body.
    body = json.dumps({"message": message}).encode()
    return _Reply(status, body, (("x-amzn-ErrorType", code),), delay_s)


def _seeded(seed: int) -> random.Random:
    # Faults must repeat from a seed, so a failing fault scenario can be replayed: not a secret.
    return random.Random(seed)  # noqa: S311


class StandInState:
    """The stand-in's faults, counters and records; used only from the server's loop thread."""

    def __init__(self, faults: Faults) -> None:
        self.faults = faults
        self._rng = _seeded(faults.seed)
        self._prefix = f"0100{secrets.randbits(32):08x}"
        self.request_prefix = secrets.token_hex(12).encode()
        self._run = secrets.token_hex(4)  # keeps ids unique across stand-ins sharing a prefix by chance
        self.reset()

    def reset(self) -> None:
        self.accepted: list[Accepted] = []
        self.counts: Counter[str] = Counter()
        self.per_second: Counter[int] = Counter()
        self.by_send_id: Counter[str] = Counter()
        self._tokens = self.faults.max_rate
        self._refilled = time.monotonic()
        self._started = time.monotonic()
        self._cpu0 = time.thread_time()
        self._rng = _seeded(self.faults.seed)

    def configure(self, changes: dict[str, Any]) -> None:
        self.faults.update(changes)
        if "seed" in changes:
            self._rng = _seeded(self.faults.seed)
        if "max_rate" in changes:
            self._tokens = self.faults.max_rate

    def _take(self, recipients: int) -> bool:
        """Token bucket over recipients: ``max_rate`` per second, one second of burst."""
        rate = self.faults.max_rate
        if rate <= 0:
            return True
        now = time.monotonic()
        self._tokens = min(rate, self._tokens + (now - self._refilled) * rate)
        self._refilled = now
        if self._tokens < recipients:
            return False
        self._tokens -= recipients
        return True

    def send_email(self, body: bytes) -> _Reply:
        f = self.faults
        delay = f.latency_ms / 1000
        self.counts["requests"] += 1
        try:
            request = json.loads(body)
            destination = request.get("Destination") or {}
            recipients = sum(len(destination.get(k) or ()) for k in ("ToAddresses", "CcAddresses", "BccAddresses"))
            tags = {str(t["Name"]): str(t["Value"]) for t in request.get("EmailTags") or ()}
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            self.counts["bad_request"] += 1
            return _error(400, "BadRequestException", f"the stand-in could not read the request: {exc}", delay)
        # A raw message without Destination names its recipients in its own headers: count one.
        recipients = recipients or 1
        draw = self._rng.random()
        if draw < f.throttle:
            self.counts["throttled"] += 1
            return _error(429, "TooManyRequestsException", "Rate exceeded.", delay)
        draw -= f.throttle
        if draw < f.error_5xx:
            self.counts["errors_5xx"] += 1
            return _error(500, "InternalFailure", "The request processing has failed because of an unknown error.",
                          delay)
        draw -= f.error_5xx
        if draw < f.timeout:
            self.counts["timeouts"] += 1
            return _Reply(0, b"", hang=True)
        draw -= f.timeout
        if not self._take(recipients):
            self.counts["rate_limited"] += 1
            return _error(429, "TooManyRequestsException", "Maximum sending rate exceeded.", delay)
        hang = draw < f.accept_hang
        # Accepted when the answer leaves (after the latency), as a client of SES sees it.
        now = time.time() + (0.0 if hang else delay)
        self.counts["accepted"] += 1
        self.counts["accepted_recipients"] += recipients
        # SES-shaped ids from a counter: uuid4 per message would cost a getrandom() call each.
        n = self.counts["accepted"]
        message_id = f"{self._prefix}{n:08x}-{self._run}-{n:012x}-000000"
        record = Accepted(now, message_id, recipients, tags, hung=hang)
        self.accepted.append(record)
        self.per_second[int(now)] += recipients
        if record.send_id is not None:
            self.by_send_id[record.send_id] += 1
        if hang:
            self.counts["hung"] += 1
            return _Reply(0, b"", hang=True)
        return _Reply(200, b'{"MessageId":"%s"}' % message_id.encode(), delay_s=delay)

    def account(self) -> _Reply:
        f = self.faults
        sent = self.counts["accepted_recipients"]
        body = {
            "DedicatedIpAutoWarmupEnabled": False,
            "EnforcementStatus": "HEALTHY",
            "ProductionAccessEnabled": True,
            "SendingEnabled": True,
            # -1 is how SES says "unlimited"; an unenforced stand-in says so too.
            "SendQuota": {"Max24HourSend": f.max_24h, "MaxSendRate": f.max_rate or -1.0, "SentLast24Hours": sent},
        }
        return _Reply(200, json.dumps(body).encode(), delay_s=f.latency_ms / 1000)

    def stats(self) -> dict[str, Any]:
        cpu = time.thread_time() - self._cpu0
        requests = self.counts["requests"]
        return {
            **{k: self.counts[k] for k in ("requests", "accepted", "accepted_recipients", "throttled",
                                           "rate_limited", "errors_5xx", "timeouts", "hung", "bad_request")},
            "per_second": {str(k): v for k, v in sorted(self.per_second.items())},
            "duplicates": {k: n for k, n in self.by_send_id.items() if n > 1},
            "cpu_s": round(cpu, 4),
            "process_cpu_s": round(time.process_time(), 4),
            "cpu_ms_per_request": round(cpu * 1000 / requests, 4) if requests else None,
            "uptime_s": round(time.monotonic() - self._started, 3),
            "faults": asdict(self.faults),
        }

    def accepted_lines(self, after: int = 0) -> bytes:
        lines = [json.dumps({"t": a.t, "message_id": a.message_id, "recipients": a.recipients, "tags": a.tags,
                             "hung": a.hung}, separators=(",", ":")) for a in self.accepted[after:]]
        return ("\n".join(lines) + "\n").encode() if lines else b""

    def control(self, method: str, target: str, body: bytes) -> _Reply:
        parts = urlsplit(target)
        name = parts.path[len(CONTROL):]
        try:
            if method == "GET" and name == "stats":
                return _Reply(200, json.dumps(self.stats()).encode())
            if method == "GET" and name == "accepted":
                after = int(parse_qs(parts.query).get("after", ["0"])[0])
                return _Reply(200, self.accepted_lines(after), (("Content-Type", "application/x-ndjson"),))
            if method == "POST" and name == "config":
                self.configure(json.loads(body or b"{}"))
                return _Reply(200, json.dumps(asdict(self.faults)).encode())
            if method == "POST" and name == "reset":
                self.reset()
                return _Reply(200, b"{}")
        except (ValueError, TypeError) as exc:
            return _error(400, "BadRequestException", str(exc))
        return _error(404, "NotFoundException", f"no control endpoint {method} {parts.path}")

    def route(self, method: str, target: str, body: bytes) -> _Reply:
        if method == "POST" and target == SEND_PATH:
            return self.send_email(body)
        if target.startswith(CONTROL):
            return self.control(method, target, body)
        if method == "GET" and target == ACCOUNT_PATH:
            return self.account()
        return _error(404, "NotFoundException", f"the stand-in does not implement {method} {target}")


class _Date:
    """The Date header, formatted once a second rather than per response."""

    second = -1
    value = b""

    @classmethod
    def now(cls) -> bytes:
        now = int(time.time())
        if now != cls.second:
            cls.second, cls.value = now, formatdate(now, usegmt=True).encode()
        return cls.value


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; requests are answered one at a time, in order."""

    def __init__(self, state: StandInState, loop: asyncio.AbstractEventLoop) -> None:
        self.state = state
        self.loop = loop
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.busy = False  # a request is being answered (latency timer or hang running)
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.busy:
            self._next()

    def _next(self) -> None:
        """Parse and answer the next complete request in the buffer, if there is one."""
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > _MAX_HEAD:
                self._write(_error(413, "BadRequestException", "headers too large"), close=True)
            return
        lines = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
        method, target, version = [*lines[0].split(" ", 2), "", ""][:3]
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        start = end + 4
        if headers.get("transfer-encoding", "").lower() == "chunked":
            parsed = _dechunk(self.buffer, start)
            if parsed is None:
                return  # wait for the rest of the chunks
            body, consumed = parsed
        else:
            length = int(headers.get("content-length") or 0)
            if length > _MAX_BODY:
                self._write(_error(413, "BadRequestException", "message too large"), close=True)
                return
            if len(self.buffer) < start + length:
                return
            body, consumed = bytes(self.buffer[start:start + length]), start + length
        del self.buffer[:consumed]
        close = headers.get("connection", "").lower() == "close" or version == "HTTP/1.0"
        reply = self.state.route(method, target, body)
        self.busy = True
        if reply.hang:
            # Silent until the client times out and closes, or hang_s passes.
            self.timer = self.loop.call_later(self.state.faults.hang_s, self._abort)
        elif reply.delay_s > 0:
            self.timer = self.loop.call_later(reply.delay_s, self._write, reply, close)
        else:
            self._write(reply, close)

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _write(self, reply: _Reply, close: bool = False) -> None:
        self.timer = None
        if self.transport is None:
            return
        head = [b"HTTP/1.1 %d %s" % (reply.status, _REASONS.get(reply.status, "Status").encode()),
                b"Date: " + _Date.now(),
                b"x-amzn-RequestId: %s-%012x" % (self.state.request_prefix, self.state.counts["requests"]),
                b"Content-Length: %d" % len(reply.body)]
        if not any(k.lower() == "content-type" for k, _ in reply.headers):
            head.append(b"Content-Type: application/json")
        head += [f"{k}: {v}".encode() for k, v in reply.headers]
        if close:
            head.append(b"Connection: close")
        self.transport.write(b"\r\n".join(head) + b"\r\n\r\n" + reply.body)
        self.busy = False
        if close:
            self.transport.close()
        elif self.buffer:
            self._next()


def _dechunk(buffer: bytearray, start: int) -> tuple[bytes, int] | None:
    """A chunked body and the bytes it used, or None when it is not complete yet."""
    body = bytearray()
    pos = start
    while True:
        eol = buffer.find(b"\r\n", pos)
        if eol < 0:
            return None
        size = int(bytes(buffer[pos:eol]).split(b";")[0] or b"0", 16)
        pos = eol + 2
        if size == 0:
            trailer = buffer.find(b"\r\n", pos)
            return (bytes(body), trailer + 2) if trailer >= 0 else None
        if len(buffer) < pos + size + 2:
            return None
        body += buffer[pos:pos + size]
        pos += size + 2


async def serve(state: StandInState, host: str, port: int) -> asyncio.Server:
    """Listen on ``host:port`` (0 picks a free port) with ``state`` answering."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: _Connection(state, loop), host, port, backlog=1024)


class StandInClient:
    """The control API over HTTP, the same for an in-process and a separate stand-in."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url + CONTROL, timeout=30)

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._http.get("stats").raise_for_status().json()
        return result

    def configure(self, **changes: float) -> dict[str, Any]:
        result: dict[str, Any] = self._http.post("config", json=changes).raise_for_status().json()
        return result

    def reset(self) -> None:
        self._http.post("reset").raise_for_status()

    def accepted(self, after: int = 0) -> list[dict[str, Any]]:
        text = self._http.get("accepted", params={"after": after}).raise_for_status().text
        return [json.loads(line) for line in text.splitlines() if line]

    def close(self) -> None:
        self._http.close()


class StandIn:
    """The stand-in on a thread of this process, with its own event loop (for tests)."""

    def __init__(self, faults: Faults | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.state = StandInState(faults or Faults())
        self._host, self._port = host, port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="ses-standin", daemon=True)
        self._ready = threading.Event()
        self._server: asyncio.Server | None = None
        self.url = ""
        self.client: StandInClient | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(serve(self.state, self._host, self._port))
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://{self._host}:{port}"
        self.state.reset()  # the CPU clock starts on this thread
        self._ready.set()
        self._loop.run_forever()
        self._server.close()
        self._loop.run_until_complete(self._server.wait_closed())
        self._loop.close()

    def start(self) -> StandIn:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the SES stand-in did not start")
        self.client = StandInClient(self.url)
        return self

    def stop(self) -> None:
        if self.client is not None:
            self.client.close()
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> StandIn:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


class StandInProcess(ManagedProcess):
    """``python -m declic.standin`` as a child process; :attr:`url` is known once ready."""

    def __init__(self, log_path: Path, faults: Faults | None = None, *, port: int = 0) -> None:
        f = faults or Faults()
        argv = [sys.executable, "-m", "declic.standin", "--port", str(port)]
        for name, value in asdict(f).items():
            argv += [f"--{name.replace('_', '-')}", str(value)]
        super().__init__(argv, {}, log_path, ready_line=READY, name="ses-standin")
        self.url = ""
        self.client: StandInClient | None = None

    def wait_ready(self, timeout: float = 30.0) -> None:
        super().wait_ready(timeout)
        for line in self.log_tail(200).splitlines():
            if READY in line:
                self.url = line.split(READY, 1)[1].strip()
        if not self.url:
            raise ProcessStartError(f"the stand-in did not say where it listens:\n{self.log_tail()}")
        self.client = StandInClient(self.url)

    def stop(self, timeout: float = 5.0) -> int | None:
        if self.client is not None:
            self.client.close()
        return super().stop(timeout)


def main(argv: list[str] | None = None) -> None:
    """``python -m declic.standin``: serve until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m declic.standin", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    for f in fields(Faults):
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=int if f.name == "seed" else float,
                            default=f.default)
    args = vars(parser.parse_args(argv))
    host, port = args.pop("host"), args.pop("port")
    state = StandInState(Faults(**args))

    async def run() -> None:
        server = await serve(state, host, port)
        bound = server.sockets[0].getsockname()[1]
        state.reset()
        print(f"{READY}http://{host}:{bound}", flush=True)
        async with server:
            await server.serve_forever()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


if __name__ == "__main__":
    import signal

    # SIGTERM (ManagedProcess.stop) ends the loop like Ctrl-C does.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    main()
