"""A loopback Telegram Bot API server for tests and the bench (aiohttp, 127.0.0.1, any port).

It speaks enough of the Bot API for the real python-telegram-bot Application to run against
it through ``base_url``: ``POST /bot<token>/<method>`` with form, JSON or multipart bodies.
Responses are shaped like the recorded real ones in tests/data/api_fixtures/telegram
(getMe, getUpdates, getMyCommands, deleteWebhook, sendChatAction); Message objects follow
the same shapes. Like Telegram it validates HTML (``parse_mode=HTML``): unknown or
unbalanced tags and stray ``<``/``&`` are rejected with "Bad Request: can't parse
entities", texts over 4096 and captions over 1024 UTF-16 units are rejected too.

Tests push updates (`push_command`), read every call the bot made (`calls`, `wait_for`),
and script failures for the next matching call(s): 429 with retry_after, 500, 502 (a proxy's
HTML page), 400 (parse error), 403 (kicked), 400 with ``parameters.migrate_to_chat_id``, a
stall longer than the client's timeout, and a dropped connection. `down`/`up` take the
whole server away (connection refused) and bring it back on the same port.

sendMessage checks ``reply_parameters`` (the replied message must exist in that chat unless
``allow_sending_without_reply``) and ``reply_markup`` (inline buttons, callback_data 1-64
bytes) like Telegram, and answers with ``reply_to_message``/``reply_markup``; each accepted
call keeps the Message it returned in ``Call.result``.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import html
import json
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

FIXTURES = Path(__file__).resolve().parent / "data" / "api_fixtures" / "telegram"
TEXT_KEYS = {"text", "caption", "parse_mode", "description", "callback_query_id", "action"}
ALLOWED_TAGS = {
    "b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "span", "tg-spoiler", "a",
    "code", "pre", "blockquote", "tg-emoji",
}
_TAG = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9-]*)((?:\s+[a-zA-Z-]+=(?:\"[^\"]*\"|'[^']*'|[^\s>]+))*)\s*>")
_ENTITY = re.compile(r"&(lt|gt|amp|quot|#\d{1,7}|#x[0-9a-fA-F]{1,6});")


def load_fixture(name: str, fixtures: Path = FIXTURES) -> Any:
    return json.loads((fixtures / f"{name}.json").read_text(encoding="utf-8"))


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def parse_html(text: str) -> str:
    """Telegram's HTML rules; returns the plain text or raises ValueError(reason)."""
    out: list[str] = []
    stack: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "<":
            m = _TAG.match(text, i)
            if not m:
                raise ValueError(f"Unexpected start tag at byte offset {len(text[:i].encode())}")
            closing, name = m.group(1) == "/", m.group(2).lower()
            if name not in ALLOWED_TAGS:
                raise ValueError(f'Unsupported start tag "{name}" at byte offset {i}')
            if closing:
                if not stack or stack[-1] != name:
                    raise ValueError(f'Can\'t find end tag corresponding to start tag "{name}"')
                stack.pop()
            else:
                stack.append(name)
            i = m.end()
        elif ch == "&":
            m = _ENTITY.match(text, i)
            if not m:
                raise ValueError(f"Unsupported HTML entity at byte offset {i}")
            out.append(html.unescape(m.group(0)))
            i = m.end()
        elif ch == ">":
            raise ValueError(f"Unexpected end tag at byte offset {i}")
        else:
            out.append(ch)
            i += 1
    if stack:
        raise ValueError(f'Can\'t find end tag corresponding to start tag "{stack[-1]}"')
    return "".join(out)


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    files: dict[str, bytes]
    t: float  # time.monotonic() on arrival
    status: int = 200
    result: Any = None  # what an accepted call returned (the Message for send*)

    @property
    def chat_id(self) -> Any:
        return self.params.get("chat_id")

    @property
    def text(self) -> str:
        """The text or caption as sent (HTML when parse_mode is HTML)."""
        return str(self.params.get("text") or self.params.get("caption") or "")

    @property
    def plain(self) -> str:
        """What the user sees: the text with HTML tags and entities resolved."""
        if str(self.params.get("parse_mode") or "").upper() == "HTML":
            return parse_html(self.text)
        return self.text


@dataclass
class BotApiServer:
    token: str
    fixtures: Path = FIXTURES
    max_poll_wait: float = 0.5  # long-poll timeout honoured up to this many seconds
    latency: float = 0.0  # seconds each sendMessage takes, as over a real network
    calls: list[Call] = field(default_factory=list)
    pushed_at: dict[int, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.me = load_fixture("getMe", self.fixtures)["result"]
        self.commands: list[dict[str, Any]] = load_fixture("getMyCommands", self.fixtures)["result"]
        self._template = load_fixture("getUpdates", self.fixtures)["result"][0]
        self._callback_template: dict[str, Any] | None = None
        self._answered: set[str] = set()
        self._updates: list[dict[str, Any]] = []
        self._next_update = self._template["update_id"]
        self._next_message = 1000
        self._new_update = asyncio.Event()
        self._scripts: dict[str, deque[tuple[Any, Any]]] = {}
        self._runner: web.AppRunner | None = None
        self._messages: dict[tuple[str, int], dict[str, Any]] = {}  # (chat, message_id) -> Message
        self._loop: asyncio.AbstractEventLoop | None = None
        self.port = 0

    # ---- lifecycle -------------------------------------------------------------------------

    async def start(self) -> BotApiServer:
        self._loop = asyncio.get_running_loop()
        app = web.Application(client_max_size=50 * 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def down(self) -> None:
        """Gone: open connections are closed and new ones refused until `up`."""
        await self.stop()

    async def up(self) -> None:
        """Back on the same port (so the client's base_url still works), state kept."""
        await self.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/bot"

    @property
    def base_file_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/file/bot"

    # ---- test API ----------------------------------------------------------------------------

    def push_command(
        self, text: str, *, user_id: int = 1850121251, chat_id: int | None = None,
        chat_type: str = "private", thread_id: int | None = None, edited: bool = False,
        entity_length: int | None = None,
    ) -> int:
        """Queue a message update (with a bot_command entity if text starts with /).

        ``entity_length``: the bot_command entity's length in UTF-16 units (0: no entity);
        by default it covers the first word. ``edited``: an edited_message update instead.
        """
        upd = copy.deepcopy(self._template)
        self._next_update += 1
        self._next_message += 1
        msg = upd.pop("message")
        upd["update_id"] = self._next_update
        msg["message_id"] = self._next_message
        msg["date"] = int(time.time())
        msg["from"]["id"] = user_id
        cid = user_id if chat_id is None else chat_id
        msg["chat"] = self.chat(cid, chat_type)
        msg["text"] = text
        head = text.split()[0] if text.split() else ""
        if entity_length is None:
            entity_length = utf16_len(head) if head.startswith("/") else 0
        if entity_length:
            msg["entities"] = [{"offset": 0, "length": entity_length, "type": "bot_command"}]
        else:
            msg.pop("entities", None)
        if thread_id is not None:
            msg["message_thread_id"] = thread_id
            msg["is_topic_message"] = True
        if edited:
            msg["edit_date"] = msg["date"] + 1
        upd["edited_message" if edited else "message"] = msg
        self._updates.append(upd)
        self.pushed_at[upd["update_id"]] = time.monotonic()
        self._wake()
        return int(upd["update_id"])

    def push_callback(self, data: str | None, *, user_id: int = 1850121251, chat_id: int | None = None,
                      message_id: int = 391, chat_type: str | None = None) -> str:
        """Queue a callback_query update (an inline button press), shaped like the recorded one
        (``data=None``: a query without data, as a game button sends)."""
        if self._callback_template is None:
            self._callback_template = load_fixture("INLINE-KEYBOARD-RESULT", self.fixtures)
        upd = copy.deepcopy(self._callback_template)
        self._next_update += 1
        upd["update_id"] = self._next_update
        cq = upd["callback_query"]
        cq["id"] = f"cq{self._next_update}"
        cq["from"]["id"] = user_id
        cq["message"]["chat"] = self.chat(user_id if chat_id is None else chat_id, chat_type)
        cq["message"]["message_id"] = message_id
        cq["message"]["from"] = {k: self.me[k] for k in ("id", "is_bot", "first_name", "username")}
        if data is None:
            del cq["data"]
        else:
            cq["data"] = data
        self._updates.append(upd)
        self._wake()
        return str(cq["id"])

    def _wake(self) -> None:
        """Release a waiting getUpdates, also when called from another thread (the bench)."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if self._loop is None or running is self._loop:
            self._new_update.set()
        else:
            self._loop.call_soon_threadsafe(self._new_update.set)

    def chat(self, chat_id: Any, chat_type: str | None = None) -> dict[str, Any]:
        if isinstance(chat_id, str) and not re.fullmatch(r"-?\d+", chat_id):
            return {"id": -1001000000001, "title": chat_id, "type": "channel", "username": chat_id}
        cid = int(chat_id)
        kind = chat_type or ("private" if cid > 0 else "supergroup" if cid < -10**12 else "group")
        if kind == "private":
            return {"id": cid, "first_name": "JOHN", "last_name": "DOE", "type": "private"}
        return {"id": cid, "title": "GROUPME", "type": kind}

    def script(self, method: str, *kinds: Any, chat_id: Any = None) -> None:
        """Answer the next call(s) of ``method`` (to ``chat_id`` if given) with failures.

        kinds: 429 (retry after 1 s), (429, seconds), 500, 502 (HTML body, as a proxy sends),
        400 (parse error), 403 (kicked), ("migrate", new_chat_id), ("timeout", seconds) — no
        answer for that long, then a 504 the client has stopped waiting for; nothing is
        delivered — ("slow", seconds): delivered, but only after that long (the client may
        have given up: a duplicate in the making), "drop" (the connection is closed
        without an answer) and "garbage" (HTTP 200 with an HTML body: a captive portal or a
        misrouted proxy).
        """
        q = self._scripts.setdefault(method, deque())
        for k in kinds:
            q.append((chat_id, k))

    @property
    def pending(self) -> int:
        """Updates queued and not yet confirmed by a getUpdates with a later offset."""
        return len(self._updates)

    def sent(self, method: str = "sendMessage", chat_id: Any = None, ok_only: bool = True) -> list[Call]:
        return [
            c for c in self.calls
            if c.method == method and (chat_id is None or str(c.chat_id) == str(chat_id))
            and (c.status == 200 or not ok_only)
        ]

    async def wait_for(
        self, method: str, pred: Callable[[Call], bool] = lambda c: True, *,
        timeout: float = 10.0, count: int = 1,
    ) -> list[Call]:
        deadline = time.monotonic() + timeout
        while True:
            hits = [c for c in self.calls if c.method == method and c.status == 200 and pred(c)]
            if len(hits) >= count:
                return hits
            if time.monotonic() > deadline:
                seen = [(c.method, c.status, c.text[:80]) for c in self.calls[-10:]]
                raise TimeoutError(f"no {count}x {method} within {timeout}s; last calls: {seen}")
            await asyncio.sleep(0.01)

    async def idle(self, quiet: float = 0.3, timeout: float = 15.0) -> None:
        """Wait until no call but getUpdates arrived for ``quiet`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            last = max((c.t for c in self.calls if c.method != "getUpdates"), default=0.0)
            if time.monotonic() - last >= quiet and not self._updates:
                return
            await asyncio.sleep(0.05)

    # ---- the HTTP side -----------------------------------------------------------------------

    async def _params(self, request: web.Request) -> tuple[dict[str, Any], dict[str, bytes]]:
        params: dict[str, Any] = {}
        files: dict[str, bytes] = {}
        if request.content_type == "application/json":
            params = dict(await request.json())
        elif request.can_read_body:
            form = await request.post()
            for key, value in form.items():
                if isinstance(value, web.FileField):
                    files[key] = value.file.read()
                    params[key] = f"<file {value.filename}>"
                else:
                    params[key] = value
        for key in list(params):
            v = params[key]
            jsonish = isinstance(v, str) and (
                re.fullmatch(r"-?\d+", v) or v in ("true", "false") or v[:1] in "[{"
            )
            if jsonish and key not in TEXT_KEYS:
                with contextlib.suppress(ValueError):
                    params[key] = json.loads(v)
        return params, files

    def _scripted(self, method: str, params: dict[str, Any]) -> Any:
        q = self._scripts.get(method)
        if not q:
            return None
        for i, (chat, kind) in enumerate(q):
            if chat is None or str(chat) == str(params.get("chat_id")):
                del q[i]
                return kind
        return None

    async def _handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params, files = await self._params(request)
        call = Call(method, params, files, time.monotonic())
        self.calls.append(call)
        if request.match_info["token"] != self.token:
            return self._error(call, 401, "Unauthorized")
        kind = self._scripted(method, params)
        if isinstance(kind, tuple) and kind[0] == "slow":
            await asyncio.sleep(float(kind[1]))
        elif kind is not None:
            return await self._failure(request, call, kind)
        handler = getattr(self, f"_m_{method}", None)
        if handler is None:
            return self._error(call, 404, "Not Found: method not found")
        try:
            result = await handler(params, files)
        except ValueError as exc:
            return self._error(call, 400, f"Bad Request: {exc}")
        call.result = result
        return web.json_response({"ok": True, "result": result})

    def _error(self, call: Call, code: int, description: str, **parameters: Any) -> web.Response:
        call.status = code
        body: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
        if parameters:
            body["parameters"] = parameters
        return web.json_response(body, status=code)

    async def _failure(self, request: web.Request, call: Call, kind: Any) -> web.Response:
        if kind == 429 or (isinstance(kind, tuple) and kind[0] == 429):
            wait = 1 if kind == 429 else int(kind[1])
            return self._error(call, 429, f"Too Many Requests: retry after {wait}", retry_after=wait)
        if kind == 500:
            return self._error(call, 500, "Internal Server Error")
        if kind == 502:
            call.status = 502
            return web.Response(status=502, content_type="text/html",
                                text="<html><head><title>502 Bad Gateway</title></head></html>")
        if isinstance(kind, tuple) and kind[0] == "timeout":
            call.status = 504
            await asyncio.sleep(float(kind[1]))
            return self._error(call, 504, "Gateway Timeout")
        if kind == "garbage":
            call.status = 299  # not a Bot API answer: neither accepted nor an API error
            return web.Response(status=200, content_type="text/html",
                                text="<html><body>Welcome to the hotel wifi</body></html>")
        if kind == "drop":
            call.status = 0
            assert request.transport is not None
            request.transport.abort()
            return web.Response(status=500)  # never reaches the client
        if kind == 400:
            return self._error(call, 400, "Bad Request: can't parse entities: Unsupported start "
                               "tag \"x\" at byte offset 0")
        if kind == 403:
            return self._error(call, 403, "Forbidden: bot was kicked from the group chat")
        if isinstance(kind, tuple) and kind[0] == "migrate":
            return self._error(call, 400, "Bad Request: group chat was upgraded to a supergroup "
                               "chat", migrate_to_chat_id=kind[1])
        raise AssertionError(f"unknown scripted failure {kind!r}")

    # ---- methods -----------------------------------------------------------------------------

    async def _m_getMe(self, p: dict[str, Any], f: dict[str, bytes]) -> Any:
        return self.me

    async def _m_deleteWebhook(self, p: dict[str, Any], f: dict[str, bytes]) -> Any:
        return load_fixture("deleteWebhook", self.fixtures)["result"]

    async def _m_setMyCommands(self, p: dict[str, Any], f: dict[str, bytes]) -> Any:
        self.commands = list(p.get("commands") or [])
        return True

    async def _m_getMyCommands(self, p: dict[str, Any], f: dict[str, bytes]) -> Any:
        return self.commands

    async def _m_sendChatAction(self, p: dict[str, Any], f: dict[str, bytes]) -> Any:
        return load_fixture("sendChatAction", self.fixtures)["result"]

    async def _m_answerCallbackQuery(self, p: dict[str, Any], f: dict[str, bytes]) -> Any:
        if not p.get("callback_query_id"):
            raise ValueError("query is too old and response timeout expired or query ID is invalid")
        if len(str(p.get("text") or "")) > 200:  # Bot API: text, 0-200 characters
            raise ValueError("MESSAGE_TOO_LONG")
        if p["callback_query_id"] in self._answered:  # a query is answered once
            raise ValueError("query is too old and response timeout expired or query ID is invalid")
        self._answered.add(p["callback_query_id"])
        return True

    async def _m_close(self, p: dict[str, Any], f: dict[str, bytes]) -> Any:
        return True

    async def _m_logOut(self, p: dict[str, Any], f: dict[str, bytes]) -> Any:
        return True

    async def _m_getUpdates(self, p: dict[str, Any], f: dict[str, bytes]) -> Any:
        offset = int(p.get("offset") or 0)
        self._updates = [u for u in self._updates if u["update_id"] >= offset]
        if not self._updates:
            self._new_update.clear()
            wait = min(float(p.get("timeout") or 0), self.max_poll_wait)
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._new_update.wait(), wait)
        limit = int(p.get("limit") or 100)
        return self._updates[:limit]

    def _message(self, p: dict[str, Any], **extra: Any) -> dict[str, Any]:
        reply_to = self._replied(p)
        markup = self._markup(p)
        self._next_message += 1
        msg = {
            "message_id": self._next_message,
            "from": {k: self.me[k] for k in ("id", "is_bot", "first_name", "username")},
            "chat": self.chat(p.get("chat_id")),
            "date": int(time.time()),
            **extra,
        }
        if p.get("message_thread_id") is not None:
            msg["message_thread_id"] = p["message_thread_id"]
            msg["is_topic_message"] = True
        if reply_to is not None:
            msg["reply_to_message"] = reply_to
        if markup is not None:
            msg["reply_markup"] = markup
        self._messages[(str(p.get("chat_id")), self._next_message)] = msg
        return msg

    def _replied(self, p: dict[str, Any]) -> dict[str, Any] | None:
        rp = p.get("reply_parameters")
        if rp is None:
            return None
        if not isinstance(rp, dict) or not isinstance(rp.get("message_id"), int):
            raise ValueError("can't parse reply parameters JSON object")
        found = self._messages.get((str(p.get("chat_id")), rp["message_id"]))
        if found is None and not rp.get("allow_sending_without_reply"):
            raise ValueError("message to be replied not found")
        return None if found is None else {k: v for k, v in found.items() if k != "reply_to_message"}

    def _markup(self, p: dict[str, Any]) -> dict[str, Any] | None:
        rm = p.get("reply_markup")
        if rm is None:
            return None
        rows = rm.get("inline_keyboard") if isinstance(rm, dict) else None
        if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
            raise ValueError("can't parse reply keyboard markup JSON object")
        for button in (b for r in rows for b in r):
            if not isinstance(button, dict) or not button.get("text"):
                raise ValueError("can't parse inline keyboard button: text must be non-empty")
            data = button.get("callback_data")
            if not isinstance(data, str) or not 1 <= len(data.encode()) <= 64:
                raise ValueError("BUTTON_DATA_INVALID")
        return {"inline_keyboard": rows}

    def _plain(self, text: str, p: dict[str, Any]) -> str:
        if str(p.get("parse_mode") or "").upper() == "HTML":
            try:
                return parse_html(text)
            except ValueError as exc:
                raise ValueError(f"can't parse entities: {exc}") from None
        if p.get("parse_mode"):
            raise ValueError("unsupported parse_mode in this test server")
        return text

    async def _m_sendMessage(self, p: dict[str, Any], f: dict[str, bytes]) -> Any:
        if self.latency:
            await asyncio.sleep(self.latency)
        if "chat_id" not in p:
            raise ValueError("chat_id is empty")
        text = self._plain(str(p.get("text") or ""), p)
        if not text.strip():
            raise ValueError("message text is empty")
        if utf16_len(text) > 4096:
            raise ValueError("message is too long")
        return self._message(p, text=text)

    async def _m_sendPhoto(self, p: dict[str, Any], f: dict[str, bytes]) -> Any:
        if "chat_id" not in p:
            raise ValueError("chat_id is empty")
        data = f.get("photo")
        if not data:
            raise ValueError("there is no photo in the request")
        cap = self._plain(str(p.get("caption") or ""), p)
        if utf16_len(cap) > 1024:
            raise ValueError("message caption is too long")
        size = {"file_id": f"AgAD{len(data)}", "file_unique_id": f"AQAD{len(data)}",
                "width": 1080, "height": 1350, "file_size": len(data)}
        extra: dict[str, Any] = {"photo": [size]}
        if cap:
            extra["caption"] = cap
        return self._message(p, **extra)


# ---- harness: the real Application on its own loop thread, driven synchronously ----------

TOKEN = "5081234567:AAF-loopbackTestToken_0123456789abcdef"
USER, ADMIN, STRANGER = 1850121251, 424242, 999000999
GROUP = -713953955


class BotHarness:
    """Server + Application running on a private event loop in a thread.

    Sync tests (hypothesis included) call `ask`, which pushes an update and returns the
    replies the bot sent to that chat once it has been quiet for ``quiet`` seconds.
    """

    def __init__(self, cfg: Any, *, token: str = TOKEN, poll: Any = None,
                 httpx_info: bool = False, **app_kw: Any) -> None:
        """``app_kw``: passed to `bot.app.build_application` (concurrent_updates, overall_max_rate)."""
        import threading

        self.cfg, self.token, self.poll, self.httpx_info = cfg, token, poll, httpx_info
        self.app_kw = app_kw
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server: BotApiServer = self.run(self._start())

    def run(self, coro: Any, timeout: float = 60.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _start(self) -> BotApiServer:
        import logging

        from bot.app import build_application, start
        from core.config import TelegramConfig

        server = await BotApiServer(self.token).start()
        tg = self.cfg.telegram.model_dump()
        tg.update(base_url=server.base_url, base_file_url=server.base_file_url)
        self.cfg = self.cfg.model_copy(update={"telegram": TelegramConfig(**tg)})
        from service.api import ServiceApi

        self.app = build_application(self.cfg, self.token, ServiceApi(self.cfg, poll=self.poll), **self.app_kw)
        if self.httpx_info:
            logging.getLogger("httpx").setLevel(logging.INFO)
        await start(self.app, poll_timeout=1)
        return server

    async def _stop(self) -> None:
        from bot.app import stop

        await stop(self.app)
        await self.server.stop()

    def close(self) -> None:
        try:
            self.run(self._stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()

    @property
    def errors(self) -> int:
        return int(self.app.bot_data["errors"].count)

    async def _ask(self, text: str, chat_id: Any, quiet: float, timeout: float,
                   **kw: Any) -> list[Call]:
        before = len(self.server.calls)
        self.server.push_command(text, chat_id=chat_id, **kw)
        target = kw.get("user_id", USER) if chat_id is None else chat_id

        def replies() -> list[Call]:
            return [c for c in self.server.calls[before:]
                    if c.method in ("sendMessage", "sendPhoto")
                    and str(c.chat_id) == str(target) and c.status == 200]

        deadline = time.monotonic() + timeout
        while not replies() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        last = len(replies())
        quiet_until = time.monotonic() + quiet
        while time.monotonic() < quiet_until:
            await asyncio.sleep(0.02)
            if len(replies()) != last:
                last = len(replies())
                quiet_until = time.monotonic() + quiet
        return replies()

    def one(self, text: str, **kw: Any) -> str:
        """The one reply to ``text``, as the user reads it (fails on none or several)."""
        replies = self.ask(text, **kw)
        assert len(replies) == 1, [r.text for r in replies]
        return replies[0].plain

    def ask(self, text: str, *, chat_id: Any = None, quiet: float = 0.2,
            timeout: float = 15.0, **kw: Any) -> list[Call]:
        result: list[Call] = self.run(self._ask(text, chat_id, quiet, timeout, **kw),
                                      timeout + 30)
        return result


_DEMO: dict[str, Any] = {}


def demo_config(**telegram: Any) -> Any:
    """The demo database (built once per test process) with a bot-ready config."""
    import tempfile

    from core.config import TelegramConfig
    from service.demo import build_demo_db

    if "cfg" not in _DEMO:
        _DEMO["cfg"] = build_demo_db(Path(tempfile.mkdtemp(prefix="corrbot-bot-")) / "demo.db")
    tg: dict[str, Any] = {
        "allowed_user_ids": [USER], "admin_user_ids": [ADMIN], "allowed_chat_ids": [GROUP],
        "alert_levels": [0.5, -0.25],
    }
    tg.update(telegram)
    return _DEMO["cfg"].model_copy(update={"telegram": TelegramConfig(**tg)})
