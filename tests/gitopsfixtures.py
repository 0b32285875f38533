"""Real Git repositories holding a generated fleet, for the change-by-pull-request tests:
commit the base on ``main``, branch, edit files as a person would, commit the head."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import http.server
import io
import json
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import git
import uvicorn

from tests.simfixtures import LOOPBACK, reserve_port, wait_for
from werft.inventory.generate import write_fleet

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_POLICIES = ROOT / "inventory" / "policies"


@dataclass
class InventoryRepo:
    path: Path  # the working tree (the inventory is path / "inventory")
    repo: git.Repo

    @property
    def inventory(self) -> Path:
        return self.path / "inventory"

    def branch(self, name: str, start: str = "main") -> None:
        self.repo.git.checkout("-B", name, start)

    def commit(self, message: str, author: str = "alice") -> str:
        self.repo.git.add("-A")
        actor = git.Actor(author, f"{author}@example.test")
        return self.repo.index.commit(message, author=actor, committer=actor).hexsha

    def edge_rows(self) -> list[dict[str, str]]:
        text = (self.inventory / "edge-sites.csv").read_text()
        return list(csv.DictReader(io.StringIO(text)))

    def write_edge_rows(self, rows: list[dict[str, str]]) -> None:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        (self.inventory / "edge-sites.csv").write_text(out.getvalue())

    def replace(self, rel: str, old: str, new: str, count: int = -1) -> None:
        path = self.inventory / rel
        text = path.read_text()
        assert old in text, f"{old!r} not in {rel}"
        path.write_text(text.replace(old, new, count))


def make_repo(
    path: Path,
    *,
    edge: int = 3,
    near: int = 1,
    core: int = 0,
    policies: bool = True,
    endpoint: str = "http://127.0.0.1:8686",
) -> InventoryRepo:
    """A repository whose ``main`` holds a generated fleet (and the sample policies)."""
    path.mkdir(parents=True, exist_ok=True)
    repo = git.Repo.init(path, initial_branch="main")
    write_fleet(
        path / "inventory",
        edge_sites=edge,
        near_edge_sites=near,
        core_sites=core,
        endpoint=endpoint,
    )
    if policies:
        shutil.copytree(SAMPLE_POLICIES, path / "inventory" / "policies")
    handle = InventoryRepo(path, repo)
    handle.commit("the fleet", author="alice")
    return handle


def new_edge_row(rows: list[dict[str, str]], name: str, mac: str) -> dict[str, str]:
    """A copy of the first row as another site: its own name, BMC address and MAC."""
    row = dict(rows[0])
    old = row["site"]
    row["site"] = name
    row["bmc_address"] = row["bmc_address"].replace(old, name)
    row["boot_mac"] = mac
    return row


# --- real HTTP on loopback: the receiver, and a forge that records what it is told --------


@contextlib.contextmanager
def serve_asgi(app: Any) -> Iterator[str]:
    """Serve an ASGI app with uvicorn in a thread on a free loopback port; its base URL."""
    sock = reserve_port()
    port = int(sock.getsockname()[1])
    config = uvicorn.Config(app, host=LOOPBACK, port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True
    )
    thread.start()
    url = f"http://{LOOPBACK}:{port}"
    try:
        wait_for(lambda: server.started, timeout=10, what="the webhook receiver to start")
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class RecordingForge:
    """A loopback stand-in for the GitHub and GitLab REST APIs: records every request and
    answers in their shapes (comments, notes, statuses, reviews, approvals)."""

    url: str
    requests: list[Recorded] = field(default_factory=list)
    approved_by: list[str] = field(default_factory=list)

    def made(self, method: str, contains: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method and contains in r.path]


@contextlib.contextmanager
def recording_forge() -> Iterator[RecordingForge]:
    forge = RecordingForge(url="")
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        def _record(self) -> Recorded:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            item = Recorded(
                self.command,
                self.path,
                {k.lower(): v for k, v in self.headers.items()},
                json.loads(raw) if raw else None,
            )
            with lock:
                forge.requests.append(item)
            return item

        def _reply(self, status: int, data: Any) -> None:
            payload = json.dumps(data).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self) -> None:
            item = self._record()
            if item.path.split("?")[0].endswith("/reviews"):
                self._reply(200, [{"user": {"login": a}, "state": "APPROVED"}
                                  for a in forge.approved_by])
            elif item.path.split("?")[0].endswith("/approvals"):
                self._reply(200, {"approved_by": [{"user": {"username": a}}
                                                  for a in forge.approved_by]})
            else:  # the comments so far
                bodies = [r.body for r in forge.requests if r.method == "POST"
                          and ("/comments" in r.path or "/notes" in r.path)]
                self._reply(200, [{"id": i + 1, "body": b["body"]} for i, b in enumerate(bodies)])

        def do_POST(self) -> None:
            item = self._record()
            self._reply(201, {"id": len(forge.requests), "html_url": f"{forge.url}{item.path}"})

        def do_PATCH(self) -> None:
            self._record()
            self._reply(200, {"id": 1})

        do_PUT = do_PATCH

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer((LOOPBACK, 0), Handler)
    forge.url = f"http://{LOOPBACK}:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield forge
    finally:
        server.shutdown()
        server.server_close()
