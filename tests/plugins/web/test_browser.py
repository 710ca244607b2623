"""The page in a real browser: Debian's headless Chromium, driven by selenium.

The browser and its driver are the system's (``/usr/bin/chromium``,
``/usr/bin/chromedriver``, installed by ``make test``'s setup); selenium is
given both paths and ``SE_OFFLINE``, so nothing is downloaded. The engine
runs in the test's trio loop; selenium's blocking calls go to a thread.

Set ``MUX_WEB_SCREENSHOTS=docs/img`` to refresh the docs' screenshots.
"""

from __future__ import annotations

import os
import shutil
import socket
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from mux_core.testing import ServerProcess, serve_sse
from tests.helpers.e2e import MUX, running_engine
from tests.plugins.web.helpers import web_sink

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
_MISSING = not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER))

# On CI a missing browser is a failure (make test installs it); elsewhere a skip.
pytestmark = pytest.mark.skipif(
    _MISSING and not os.environ.get("CI"),
    reason="Debian's chromium and chromium-driver are not installed (make test installs them)",
)

#: What the page shows of each row, read in one call.
_ROWS = """
return Array.from(document.querySelectorAll('#rows tr')).map(tr => ({
  name: tr.dataset.source,
  shown: tr.querySelector('td.name').firstChild.textContent,
  state: tr.querySelector('.badge').textContent,
  detail: tr.querySelector('.detail').textContent,
  values: tr.querySelector('.values').textContent,
  run: tr.querySelector('.run').textContent,
}));
"""


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    os.environ["SE_OFFLINE"] = "true"  # selenium-manager never downloads a driver
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-quic",
        "--window-size=1400,1000",
        f"--user-data-dir={tmp_path / 'chromium'}",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _page(driver: Any, call: Callable[[Any], Any]) -> Any:
    return await trio.to_thread.run_sync(call, driver)


async def _until(
    driver: Any, predicate: Callable[[list[dict[str, str]]], bool], timeout: float = 30.0
) -> list[dict[str, str]]:
    """The page's rows once ``predicate(rows)`` holds (read every 0.1 s)."""
    rows: list[dict[str, str]] = []
    try:
        with trio.fail_after(timeout):
            while True:
                rows = await _page(driver, lambda d: d.execute_script(_ROWS))
                if predicate(rows):
                    return rows
                await trio.sleep(0.1)
    except trio.TooSlowError:
        raise AssertionError(f"the page never showed it; last rows: {rows}") from None


def _screenshot(driver: Any, tmp_path: Path, name: str) -> Path:
    folder = Path(os.environ.get("MUX_WEB_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    driver.save_screenshot(str(path))
    return path


def _csp_violations(driver: Any) -> list[str]:
    return [
        entry["message"]
        for entry in driver.get_log("browser")
        if "Content Security Policy" in entry["message"] or "Refused to" in entry["message"]
    ]


async def test_the_page_follows_the_demo_trainer_through_a_kill(
    tmp_path: Path, browser: Any
) -> None:
    ws_port, rest_port = _free_port(), _free_port()
    argv = [*MUX, "serve-demo", "--sse-port", "{port}", "--ws-port", str(ws_port)]
    argv += ["--rest-port", str(rest_port), "--rate", "20"]
    async with ServerProcess(argv) as trainer:
        toml = textwrap.dedent(
            f"""
            [retry]
            initial_delay = 1.0
            max_delay = 1.5
            jitter = 0.0

            [[sources]]
            name = "train-sse"
            transport = "sse"
            url = "http://127.0.0.1:{trainer.port}/events"

            [[sources]]
            name = "train-ws"
            transport = "ws"
            url = "ws://127.0.0.1:{ws_port}/ws"
            id_field = "id"
            event_field = "event"
            resume_param = "last_id"

            [[sources]]
            name = "train-rest"
            transport = "rest"
            url = "http://127.0.0.1:{rest_port}/metrics"
            interval = 0.5
            items = "items"
            event_field = "event"
            cursor_param = "after"

            [[processors]]
            type = "restart"
            field = "step"

            [[sinks]]
            type = "web"
            listen = "127.0.0.1:0"
            fields = ["loss", "lr"]
            log_y = ["loss"]
            """
        )
        async with running_engine(toml) as (engine, collect):
            sink = await web_sink(engine)
            await _page(browser, lambda d: d.get(sink.url))
            names = {"train-sse", "train-ws", "train-rest"}

            def all_in(state: str) -> Callable[[list[dict[str, str]]], bool]:
                return lambda rows: {r["name"] for r in rows if r["state"] == state} == names

            # Connected, and each with a first value (a REST source connects
            # before its first poll's page has arrived).
            rows = await _until(
                browser,
                lambda rows: (
                    all_in("connected")(rows) and all(r["values"].startswith("loss ") for r in rows)
                ),
            )
            first = {r["name"]: r["values"] for r in rows}
            await _until(browser, lambda rows: all(r["values"] != first[r["name"]] for r in rows))
            canvases = "return document.querySelectorAll('.plot canvas').length"
            plots = await _page(browser, lambda d: d.execute_script(canvases))
            assert plots == 2  # one uPlot per field

            # Far enough that the restarted trainer (ids are steps) is still behind
            # the last id mux resumes from: it starts over, run 2.
            await collect.wait_for(
                lambda c: any(
                    e.source == "train-sse" and isinstance(e.data, dict) and e.data["step"] >= 100
                    for e in c.events[-10:]
                ),
                timeout=30,
            )
            await trainer.kill()

            def waiting(rows: list[dict[str, str]]) -> bool:
                sse = next(r for r in rows if r["name"] == "train-sse")
                return sse["state"] == "server unavailable" and "retry in" in sse["detail"]

            rows = await _until(browser, waiting)
            await trainer.restart()  # the demo trainer starts over at step 1: run 2
            await _until(
                browser,
                lambda rows: (
                    all_in("connected")(rows)
                    and next(r for r in rows if r["name"] == "train-sse")["run"] == "2"
                ),
            )
            assert not _csp_violations(browser)
            # The outage and run 2 on the plots: the docs' screenshot.
            shot = await _page(browser, lambda d: _screenshot(d, tmp_path, "web-view.png"))
            assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


async def test_hostile_names_and_payloads_render_as_text(tmp_path: Path, browser: Any) -> None:
    from selenium.common.exceptions import NoAlertPresentException

    name = "<img src=x onerror=alert(1)>"
    script = "<script>alert('payload')</script>"
    token = "browser-test-token-0123456789"
    async with serve_sse() as server:
        toml = textwrap.dedent(
            f"""
            [[sources]]
            name = "{name}"
            transport = "sse"
            url = "{server.url}"

            [[sinks]]
            type = "web"
            listen = "127.0.0.1:0"
            fields = ["loss", "note"]
            token = "{token}"
            """
        )
        async with running_engine(toml) as (engine, collect):
            sink = await web_sink(engine)
            for step in range(1, 4):
                await server.publish({"step": step, "loss": 0.5, "note": script}, id=script)
            await collect.wait_for(lambda c: len(c.events) == 3)
            await _page(browser, lambda d: d.get(f"{sink.url}?token={token}"))
            landed = await _page(browser, lambda d: d.current_url)
            assert landed == sink.url  # the token left the address bar (a cookie holds it)
            rows = await _until(browser, lambda rows: any(script in r["values"] for r in rows))
            assert rows[0]["name"] == name and rows[0]["shown"] == name
            counts = await _page(
                browser,
                lambda d: d.execute_script(
                    "return [document.querySelectorAll('script').length,"
                    " document.querySelectorAll('img').length]"
                ),
            )
            assert counts == [2, 0]  # only the page's own scripts; no element was injected

            def no_dialog(driver: Any) -> bool:
                try:
                    driver.switch_to.alert  # noqa: B018
                except NoAlertPresentException:
                    return True
                return False

            assert await _page(browser, no_dialog)
            assert not _csp_violations(browser)


#: What each plot exposes: its x axis, its first and last x, its lines' styles.
_PLOTS = """
return Array.from(document.querySelectorAll('.plot')).map(box => ({
  field: box.dataset.field,
  x: box.dataset.x,
  xs: JSON.parse(box.dataset.xs || '[]'),
  series: JSON.parse(box.dataset.series || '[]'),
  choice: document.getElementById('x-axis').value,
  options: Array.from(document.querySelectorAll('#x-axis option')).map(o => o.textContent),
}));
"""


async def test_the_plots_go_by_the_payload_time_and_show_earlier_runs_dashed(
    tmp_path: Path, browser: Any
) -> None:
    # Payload times a minute apart, in milliseconds; all received within a second.
    start_ms = 1_765_000_000_000

    def ts(i: int) -> int:
        return start_ms + i * 60_000

    async with serve_sse() as server:
        toml = textwrap.dedent(
            f"""
            [[sources]]
            name = "train"
            transport = "sse"
            url = "{server.url}"

            [[sinks]]
            type = "web"
            listen = "127.0.0.1:0"
            fields = ["loss"]
            time_field = "ts"
            x = "ts"
            """
        )
        async with running_engine(toml) as (engine, collect):
            sink = await web_sink(engine)
            # Run 1: steps 1-5; run 2 starts over at step 1 (the step went back).
            for i, step in enumerate([1, 2, 3, 4, 5, 1, 2, 3]):
                await server.publish({"step": step, "loss": 1.0 / (i + 1), "ts": ts(i)})
            await collect.wait_for(lambda c: len(c.events) == 8)
            await _page(browser, lambda d: d.get(sink.url))
            await _until(browser, lambda rows: bool(rows) and rows[0]["run"] == "2")

            async def plots_when(predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
                plot: dict[str, Any] = {}
                with trio.fail_after(30):
                    while not plot or not predicate(plot):
                        found = await _page(browser, lambda d: d.execute_script(_PLOTS))
                        plot = found[0] if found else {}
                        await trio.sleep(0.1)
                return plot

            plot = await plots_when(lambda p: len(p["series"]) == 2)
            # x = "ts": by the payload's own time, in seconds (ms told by size).
            assert plot["x"] == "ptime" and plot["choice"] == "ptime"
            assert "by ts (payload time)" in plot["options"]
            assert plot["xs"] == [ts(0) / 1000, ts(7) / 1000]
            # Run 1 is there, dashed; run 2, the current one, solid.
            earlier, current = plot["series"]
            assert earlier["label"] == "train · run 1" and earlier["faded"]
            assert earlier["dash"] and earlier["stroke"].startswith("#")
            assert current["label"] == "train · run 2" and not current["faded"]
            assert current["dash"] == []

            # Switched to the time received: the 7 minutes are gone (< 60 s).
            await _page(
                browser,
                lambda d: d.execute_script(
                    "const s = document.getElementById('x-axis'); s.value = 'time';"
                    " s.dispatchEvent(new Event('change'));"
                ),
            )
            plot = await plots_when(lambda p: p["x"] == "time")
            first, last = plot["xs"]
            assert 0 <= last - first < 60
            assert not _csp_violations(browser)
