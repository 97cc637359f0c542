"""A real headless Chromium driven over the DevTools protocol (CDP), for the browser tests.

    with Browser.launch(tmp_path) as browser:
        browser.goto("http://127.0.0.1:8080/")
        browser.wait_for("document.querySelector('tr[data-snapshot]') !== null")
        browser.screenshot(tmp_path / "dashboard.png")

Chromium is Debian's `chromium` package (scripts/install-chromium.sh installs
it; `make test` runs that). The protocol travels over a websocket
(websocket-client from PyPI); nothing else is needed.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import websocket

CANDIDATES = ("chromium", "chromium-browser", "google-chrome")


class BrowserError(RuntimeError):
    pass


def chromium_path() -> str | None:
    explicit = os.environ.get("CL_CHROMIUM")
    if explicit:
        return explicit
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


class Browser:
    def __init__(self, process: subprocess.Popen[str], ws_url: str, profile: str) -> None:
        self.process = process
        self.profile = profile
        self._drain: threading.Thread | None = None
        browser = websocket.create_connection(ws_url, timeout=30, suppress_origin=True)
        self._id = 0
        self._ws = browser
        target = self._call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self._call("Target.attachToTarget", {"targetId": target, "flatten": True})
        self._session = session["sessionId"]
        self.call("Page.enable")
        self.call("Runtime.enable")
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": False},
        )

    @classmethod
    def launch(cls, executable: str | None = None, timeout: float = 60.0) -> Browser:
        path = executable or chromium_path()
        if path is None:
            raise BrowserError(
                "no Chromium found: run scripts/install-chromium.sh (Debian's chromium package)"
            )
        profile = tempfile.mkdtemp(prefix="cl-chromium-")
        process = subprocess.Popen(
            [
                path,
                "--headless=new",
                "--no-sandbox",  # tests run as root in CI
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--remote-debugging-port=0",
                "--remote-allow-origins=*",
                f"--user-data-dir={profile}",
                "--window-size=1280,900",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "no_proxy": "*", "NO_PROXY": "*"},
        )
        deadline = time.monotonic() + timeout
        assert process.stderr is not None
        seen = []
        while time.monotonic() < deadline:
            line = process.stderr.readline()
            if not line:
                if process.poll() is not None:
                    break
                continue
            seen.append(line)
            match = re.search(r"DevTools listening on (ws://\S+)", line)
            if match:
                # Keep draining stderr so Chromium never blocks on a full pipe.
                drain = _drain(process)
                browser = cls(process, match.group(1), profile)
                browser._drain = drain
                return browser
        process.kill()
        process.wait()
        process.stderr.close()
        shutil.rmtree(profile, ignore_errors=True)
        raise BrowserError("Chromium did not start: " + "".join(seen[-20:]))

    # ----------------------------------------------------------- protocol

    def _send(self, method: str, params: dict[str, Any] | None, session: str | None) -> int:
        self._id += 1
        message: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        self._ws.send(json.dumps(message))
        return self._id

    def _wait(self, ident: int) -> dict[str, Any]:
        while True:
            reply = json.loads(self._ws.recv())
            if reply.get("id") == ident:
                if "error" in reply:
                    raise BrowserError(f"CDP error: {reply['error']}")
                return dict(reply.get("result", {}))

    def _call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return self._wait(self._send(method, params, None))

    def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return self._wait(self._send(method, params, self._session))

    # ------------------------------------------------------------- helpers

    def goto(self, url: str) -> None:
        self.call("Page.navigate", {"url": url})
        self.wait_for("document.readyState === 'complete'", timeout=30)

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30.0, interval: float = 0.2) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError(f"timed out after {timeout:g}s waiting for: {expression}")
            time.sleep(interval)

    def screenshot(self, path: Path, full_page: bool = True) -> bytes:
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            metrics = self.call("Page.getLayoutMetrics")
            size = metrics.get("cssContentSize") or metrics["contentSize"]
            params["clip"] = {
                "x": 0,
                "y": 0,
                "width": max(1280, int(size["width"])),
                "height": min(int(size["height"]), 4000),
                "scale": 1,
            }
            params["captureBeyondViewport"] = True
        data = base64.b64decode(self.call("Page.captureScreenshot", params)["data"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return data

    def close(self) -> None:
        try:
            self._ws.close()
        finally:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            if self._drain is not None:
                self._drain.join(5)
            if self.process.stderr is not None:
                self.process.stderr.close()
            shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _drain(process: subprocess.Popen[str]) -> threading.Thread:
    def run() -> None:
        assert process.stderr is not None
        for _ in process.stderr:
            pass

    thread = threading.Thread(target=run, name="chromium-stderr", daemon=True)
    thread.start()
    return thread
