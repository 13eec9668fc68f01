"""The pictures seen in a real browser: the demo report and the web app, in headless chromium.

Uses the system's chromium (Debian package ``chromium``; ``.ci/run`` installs it) through
playwright, never playwright's downloaded browsers. The network is closed, so chromium runs with
its background networking off; the tests also check that no page asks for anything beyond
loopback. Screenshots go to ``$COMIT_TEST_ARTIFACTS`` (default: ``test-artifacts/``).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from comit.cli import app
from comit.data import sample_paths
from comit.viz.figures import TokenGridLayout

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(os.environ.get("COMIT_TEST_ARTIFACTS", Path(__file__).resolve().parent.parent / "test-artifacts"))
SERVER_START_S = 90
RUN_S = 60


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium; .ci/run installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1100})
    page = context.new_page()
    page.outside_requests = []
    page.failed_requests = []
    page.on("request", lambda request: None if is_local(request.url) else page.outside_requests.append(request.url))
    page.on("requestfailed", lambda request: page.failed_requests.append(request.url))
    yield page
    context.close()


def is_local(url: str) -> bool:
    return url.startswith(("http://127.0.0.1", "data:", "blob:", "file:", "about:"))


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    return path


# ---------------------------------------------------------------------- the demo report
def test_demo_report_renders_every_image(tmp_path, page):
    """The README's main job as it ships: the bundled model on the bundled samples."""
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--out", str(out)])
    assert result.exit_code == 0, result.output
    page.goto((out / "index.html").as_uri())
    page.wait_for_load_state("load")
    images = page.eval_on_selector_all("img", "all => all.map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
    per_image = 6 + 8  # crop path, reconstruction, strip, attention grid, token ids; 8 overlays (+ the source)
    assert len(images) >= len(sample_paths()) * (per_image - 1)
    broken = [i for i, (complete, width, height) in enumerate(images) if not (complete and width > 0 and height > 0)]
    assert not broken, f"images that did not render: {broken}"
    anchors = page.eval_on_selector_all("a[href]", "all => all.map(a => a.getAttribute('href'))")
    assert anchors and all(page.query_selector(href) is not None for href in anchors), anchors
    assert not page.failed_requests and not page.outside_requests
    screenshot(page, "demo-report.png")


# ---------------------------------------------------------------------- the web app
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def server(tmp_path, tiny_model_dir):
    """`comit serve` on a free loopback port, with the tiny model; stopped after the test."""
    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONUNBUFFERED": "1",  # so that a failure can quote what the server printed up to then
           "GRADIO_TEMP_DIR": str(tmp_path / "gradio"), "NO_PROXY": "127.0.0.1,localhost"}
    log = open(tmp_path / "serve.log", "w+")
    process = subprocess.Popen([sys.executable, "-m", "comit.cli", "serve", "--port", str(port), "--model",
                                str(tiny_model_dir), "--max-upload-mb", "1"], stdout=log, stderr=subprocess.STDOUT,
                               env=env)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until_up(url, process, log)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def wait_until_up(url: str, process: subprocess.Popen, log) -> None:
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            pytest.fail(f"comit serve exited with {process.returncode}:\n{log.read()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    log.seek(0)
    pytest.fail(f"comit serve did not answer within {SERVER_START_S} s:\n{log.read()}")


def upload(page, path: Path) -> None:
    """Put a file into the upload box (clearing the one there) and wait until the server has it."""
    clear = page.locator("#upload button[aria-label='Clear']")
    if clear.count():
        clear.click()
    page.set_input_files("#upload input[type=file]", str(path))
    page.wait_for_selector(f"#upload [aria-label='{path.name}']", timeout=30_000)


RESULTS = ["#crop-path", "#reconstruction", "#one-step", "#token-ids", "#attention"]


def wait_for_picture(page, selector: str, server_log: Path) -> None:
    """Wait until the result ``selector`` shows a loaded image; if it never does, say what the page
    and the server said (a bare playwright timeout names neither the picture nor the cause)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(f"() => {{ const i = document.querySelector('{selector} img');"
                               " return i && i.complete && i.naturalWidth > 0; }", timeout=RUN_S * 1000)
    except PlaywrightTimeout:
        note = page.inner_text("#note")
        toasts = page.eval_on_selector_all(".toast-body", "all => all.map(t => t.innerText)")
        log = server_log.read_text()[-4000:] if server_log.exists() else "(no server log)"
        pytest.fail(f"{selector} showed no image within {RUN_S} s; note: {note!r}; toasts: {toasts}; "
                    f"requests that failed: {page.failed_requests}; server log:\n{log}")


@pytest.fixture
def app_page(server, page):
    """The app's page; whatever happens, the last state is saved as a screenshot."""
    page.goto(server)
    yield page
    screenshot(page, "app-last.png")


def test_app_reconstructs_an_uploaded_image(app_page, tmp_path):
    page = app_page
    page.wait_for_selector("#run", timeout=30_000)
    upload(page, sample_paths()[2])
    page.click("#run")
    for selector in RESULTS:
        wait_for_picture(page, selector, tmp_path / "serve.log")
    assert "crops (#4" in page.inner_text("#note")  # adaptive: the centre crop first
    first_token = page.input_value("#token input")
    assert first_token.isdigit()

    # a click on a token cell selects that token and redraws its attention
    grid = page.locator("#token-ids img")
    natural = grid.evaluate("i => [i.naturalWidth, i.naturalHeight]")
    box = grid.bounding_box()
    layout = TokenGridLayout.for_tokens(16)
    assert tuple(natural) == layout.size
    target = 13 if first_token != "13" else 2
    left, top, right, bottom = layout.cell(target)
    zoom = box["width"] / natural[0]
    grid.click(position={"x": (left + right) / 2 * zoom, "y": (top + bottom) / 2 * zoom})
    page.wait_for_function(f"() => document.querySelector('#token input').value === '{target}'", timeout=30_000)
    screenshot(page, "app-reconstruction.png")

    # a file that is not an image gets a clear message, and the last pictures stay
    bad = tmp_path / "notes.png"
    bad.write_text("shopping list")
    upload(page, bad)
    page.click("#run")
    page.wait_for_function("() => document.querySelector('#note').innerText.includes('not a recognised image format')",
                           timeout=RUN_S * 1000)
    assert "notes.png" in page.inner_text("#note")
    assert page.eval_on_selector("#crop-path img", "i => i.naturalWidth") > 0
    screenshot(page, "app-not-an-image.png")

    # an upload over the limit (1 MB here) is refused by the server with a message
    big = tmp_path / "big.png"
    big.write_bytes(os.urandom(int(1.5 * 2**20)))
    page.click("#upload button[aria-label='Clear']")
    page.set_input_files("#upload input[type=file]", str(big))
    page.wait_for_selector("text=exceed the maximum allowed size", timeout=30_000)
    assert page.locator("#upload [aria-label='big.png']").count() == 0
    assert not page.outside_requests, page.outside_requests
