#!/usr/bin/env python3
"""Run each cross-built tether-agent (under qemu-user when it is foreign) against a host
tether-relay on loopback, and check what a user would: the session becomes active with the
agent's static service, an HTTP request proxied through the agent reaches a local web server,
and closing the session from the API stops the agent with exit code 3.

usage: qemu_e2e.py --relay PATH AGENT_BINARY...

Each agent gets its own system on one relay (port 0, temporary SQLite store). Everything polls
with a deadline; nothing sleeps to synchronise.
"""

import argparse
import http.server
import json
import os
import platform
import queue
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

DEADLINE = 60.0  # qemu-user on a busy 2-core runner is slow to start a TLS-free agent, not this slow
# ELF e_machine -> the qemu-user binary that runs it (None: the host runs it)
QEMU = {62: None if platform.machine() == "x86_64" else "qemu-x86_64-static", 183: "qemu-aarch64-static"}
MARKER = "tether-qemu-e2e-" + os.urandom(6).hex()


def qemu_for(binary: Path) -> list[str]:
    head = binary.read_bytes()[:64]
    order = "little" if head[5] == 1 else "big"
    machine = int.from_bytes(head[18:20], order)
    if machine == 8:
        return ["qemu-mipsel-static" if order == "little" else "qemu-mips-static"]
    if machine not in QEMU:
        raise SystemExit(f"{binary}: unknown ELF machine {machine}")
    return [QEMU[machine]] if QEMU[machine] else []


def eventually(what: str, f, deadline: float = DEADLINE):
    end = time.monotonic() + deadline
    pause = 0.01
    while True:
        v = f()
        if v is not None:
            return v
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(pause)  # polling interval, not synchronisation
        pause = min(pause * 2, 0.25)


class Service(http.server.BaseHTTPRequestHandler):
    """The device's web UI stand-in: answers every GET with the marker and the path."""

    def do_GET(self):
        body = f"{MARKER} {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Relay:
    def __init__(self, binary: Path, workdir: Path):
        self.binary, self.dir = binary, workdir
        self.database = f"sqlite://{workdir / 'tether.db'}"
        self.admin("operator", "create", "alice", "--role", "admin", "--json")
        self.token = self.admin("token", "create", "alice", "--json")["token"]
        self.log = open(workdir / "relay.log", "wb")
        self.proc = subprocess.Popen(
            [str(binary), "--database", self.database, "serve", "--listen", "127.0.0.1:0",
             "--rate-limit-per-ip", "0", "--rate-limit-per-key", "0"],
            stdout=subprocess.PIPE, stderr=self.log, env={**os.environ, "TETHER_LOG": "info"},
        )
        lines: queue.Queue = queue.Queue()

        def read():
            for raw in self.proc.stdout:
                line = raw.decode(errors="replace").strip()
                if line.startswith("tether-relay listening on http://"):
                    lines.put(line.rsplit("http://", 1)[1])

        threading.Thread(target=read, daemon=True).start()
        try:
            self.addr = lines.get(timeout=DEADLINE)
        except queue.Empty:
            raise AssertionError("the relay did not print its listen address") from None
        self.base = f"http://{self.addr}"

    def admin(self, *args) -> dict:
        out = subprocess.run([str(self.binary), "--database", self.database, *args],
                             capture_output=True, check=False)
        if out.returncode != 0:
            raise AssertionError(f"tether-relay {' '.join(args)}: {out.stderr.decode()}")
        return json.loads(out.stdout or b"null")

    def request(self, method: str, path: str) -> tuple[int, bytes]:
        req = urllib.request.Request(self.base + path, method=method,
                                     headers={"Authorization": f"Bearer {self.token}"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def get_json(self, path: str):
        status, body = self.request("GET", path)
        if status != 200:
            raise AssertionError(f"GET {path}: {status} {body[:200]!r}")
        return json.loads(body)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.log.close()


def run_agent(relay: Relay, binary: Path, index: int, service_port: int, workdir: Path) -> str:
    name = f"{index}-{binary.name}"  # one system per binary
    system = relay.admin("system", "create", name, "--json")
    cmd = qemu_for(binary) + [
        str(binary), "--url", f"ws://{relay.addr}/api/tunnel",
        "--key", system["key"], "--secret", system["secret"],
        "--static-services", f"web=127.0.0.1:{service_port}",
        "--reconnect-delay", "100ms", "--max-reconnect-delay", "500ms",
    ]
    log_path = workdir / f"{name}.log"
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy")}
    env["RUST_LOG"] = "info"
    started = time.monotonic()
    with open(log_path, "wb") as log:
        agent = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            def active_session():
                for s in relay.get_json("/api/v1/sessions?status=active")["sessions"]:
                    if s["system_name"] != name:
                        continue
                    detail = relay.get_json(f"/api/v1/sessions/{s['id']}")
                    if detail.get("connected") and "web" in (detail.get("services") or {}):
                        return s["id"]
                if agent.poll() is not None:
                    raise AssertionError(f"the agent exited with {agent.returncode}")
                return None

            sid = eventually(f"{name}: an active session with service web", active_session)
            active_after = time.monotonic() - started
            status, body = relay.request("GET", f"/api/v1/sessions/{sid}/proxy/web/hello?arch={name}")
            if status != 200 or MARKER.encode() not in body or b"/hello?arch=" not in body:
                raise AssertionError(f"{name}: proxied GET answered {status} {body[:200]!r}")
            status, body = relay.request("DELETE", f"/api/v1/sessions/{sid}")
            if status >= 300:
                raise AssertionError(f"{name}: DELETE session answered {status} {body[:200]!r}")
            code = eventually(f"{name}: the agent to exit after the session was closed",
                              lambda: agent.poll())
            if code != 3:
                raise AssertionError(f"{name}: exit code {code} after the relay closed the session, want 3")
            return f"active after {active_after:.1f} s, proxied GET 200, exit 3 on close"
        except BaseException:
            agent.kill()
            agent.wait()
            sys.stderr.write(f"--- {log_path}\n{log_path.read_text(errors='replace')[-4000:]}\n")
            raise


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--relay", type=Path, required=True, help="a host tether-relay binary")
    ap.add_argument("agents", nargs="+", type=Path)
    args = ap.parse_args()
    for a in args.agents:
        for tool in qemu_for(a):
            if subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True).returncode:
                raise SystemExit(f"{tool} is required for {a.name} (apt-get install qemu-user-static)")

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Service)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    failed = 0
    with tempfile.TemporaryDirectory(prefix="tether-qemu-") as tmp:
        workdir = Path(tmp)
        relay = Relay(args.relay, workdir)
        try:
            for index, binary in enumerate(args.agents):
                runner = " ".join(qemu_for(binary)) or "native"
                try:
                    result = run_agent(relay, binary.resolve(), index, server.server_address[1], workdir)
                    print(f"ok   {binary.name} ({runner}): {result}")
                except AssertionError as e:
                    failed += 1
                    print(f"FAIL {binary.name} ({runner}): {e}")
        finally:
            relay.stop()
            if failed:
                sys.stderr.write((workdir / "relay.log").read_text(errors="replace")[-4000:])
    server.shutdown()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
