"""The review UI in real headless Chromium (Debian's /usr/bin/chromium driven by Playwright): sign
in, see the first item obfuscated, reveal the original with a reason (and find the reveal in the
audit log), see the protected regions and the evidence view, drag a box to protect one more and
re-run the scan, decide with the keyboard, and get the next item without a page reload."""

import io
import json
import os
import re
import socket
import threading
import time

import numpy as np
import pytest
from PIL import Image

CHROMIUM = "/usr/bin/chromium"
if not os.path.exists(CHROMIUM):
    pytest.skip(f"{CHROMIUM} is absent (apt-get install chromium, or run .ci/services.sh)", allow_module_level=True)
pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
pytest.importorskip("uvicorn")
from scenes import RedDetector  # noqa: E402  (tests/ is on sys.path: pytest's rootdir conftest)
from playwright.sync_api import expect, sync_playwright  # noqa: E402

from safeview.service.app import create_app  # noqa: E402
from safeview.service.auth import create_key  # noqa: E402
from safeview.service.config import ServiceConfig  # noqa: E402
from safeview.service.worker import Worker  # noqa: E402

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def server(tmp_path_factory, photo):
    """The app on a loopback port, with two scanned images: one unsafe (red square), one safe."""
    import httpx
    import uvicorn

    root = tmp_path_factory.mktemp("browser")
    config = ServiceConfig(db_url=f"sqlite:///{root}/db.sqlite", storage=root / "storage", models=lambda: [RedDetector.build()])
    app = create_app(config)
    with app.state.sessions() as session:
        keys = {role: create_key(session, role) for role in ("submitter", "reviewer", "admin")}
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while not uv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    unsafe = photo.copy()
    unsafe[10:34, 56:80] = (255, 0, 0)
    ids = {}
    for name, image in (("unsafe", unsafe), ("safe", photo)):
        form = {"protect": json.dumps([{"box": [0, 50, 30, 90], "label": "face"}])} if name == "unsafe" else {}
        response = httpx.post(f"{base}/v1/scans", files={"file": (f"{name}.png", png(image))}, data=form, headers={"X-API-Key": keys["submitter"]})
        ids[name] = response.json()["id"]
    worker = Worker(config, app.state.sessions)
    worker.drain()
    yield {"base": base, "keys": keys, "ids": ids, "worker": worker}
    uv.should_exit = True
    thread.join(10)
    app.state.engine.dispose()


def test_review_flow_in_chromium(server):
    import httpx

    base, ids = server["base"], server["ids"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page()
            page.goto(f"{base}/ui")
            page.fill("#key", server["keys"]["submitter"])
            page.click("#signin-form button")
            expect(page.locator("#signin-error")).to_contain_text("submitter key cannot review")

            page.fill("#key", server["keys"]["reviewer"])
            page.click("#signin-form button")
            expect(page.locator("#scan-id")).to_have_text(ids["unsafe"])  # unsafe first
            expect(page.locator("#caption")).to_contain_text("Obfuscated")
            expect(page.locator("#verdict")).to_have_text("unsafe")
            expect(page.locator("#categories")).to_contain_text("cyberbullying")
            assert page.locator("#rationale").inner_text().strip() not in ("", "—")
            expect(page.locator("#attributes")).to_contain_text("second opinion on the output")  # what the detectors saw
            expect(page.locator("#image")).to_have_attribute("src", re.compile(r"^blob:"))
            deadline = time.monotonic() + 10
            while page.locator("#image").evaluate("img => img.naturalWidth") == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert page.locator("#image").evaluate("img => img.naturalWidth") == 96  # the full-size obfuscated output

            expect(page.locator("#protected")).to_contain_text("face — user — kept 100.0% — box [0, 50, 30, 90]")
            page.keyboard.press("v")
            expect(page.locator("#caption")).to_contain_text("Evidence")
            expect(page.locator("#v-evidence")).to_have_class(re.compile(r"\bon\b"))

            # protect one more region: drag a box on the image (x 48..56, y 8..36 of 96), re-run
            box = page.locator("#image").bounding_box()
            page.mouse.move(box["x"] + box["width"] * 48 / 96, box["y"] + box["height"] * 8 / 96)
            page.mouse.down()
            page.mouse.move(box["x"] + box["width"] * 52 / 96, box["y"] + box["height"] * 20 / 96)
            page.mouse.move(box["x"] + box["width"] * 56 / 96, box["y"] + box["height"] * 36 / 96)
            page.mouse.up()
            drawn = [int(page.input_value(f"#p-{name}")) for name in ("x0", "y0", "x1", "y1")]
            assert all(abs(a - b) <= 1 for a, b in zip(drawn, [48, 8, 56, 36])), drawn
            expect(page.locator("#draw-box")).to_be_visible()
            page.fill("#p-label", "birthmark")
            page.fill("#p-reason", "keep the birthmark")
            page.click("#protect")
            expect(page.locator("#status")).to_contain_text("re-running")
            server["worker"].drain()
            expect(page.locator("#protected")).to_contain_text("birthmark — reviewer — kept 100.0%", timeout=20_000)
            expect(page.locator("#status")).to_contain_text("Re-run done (result version 2)")
            log = httpx.get(f"{base}/v1/audit", params={"action": "protect_region"}, headers={"X-API-Key": server["keys"]["admin"]}).json()
            assert [(e["scan_id"], e["reason"].split(" [")[0]) for e in log["items"]] == [(ids["unsafe"], "keep the birthmark")]

            page.locator("body").click(position={"x": 1, "y": 1})
            page.keyboard.press("h")
            expect(page.locator("#caption")).to_contain_text("heat map")
            page.keyboard.press("o")
            expect(page.locator("#caption")).to_contain_text("Obfuscated")

            page.keyboard.press("r")  # without a reason, R only focuses the reason field
            expect(page.locator("#reveal-reason")).to_be_focused()
            page.fill("#reveal-reason", "confirm the stand-in")
            page.click("#reveal")
            expect(page.locator("#caption")).to_contain_text("ORIGINAL")
            log = httpx.get(f"{base}/v1/audit", params={"action": "reveal_original"}, headers={"X-API-Key": server["keys"]["admin"]}).json()
            assert [(e["scan_id"], e["reason"]) for e in log["items"]] == [(ids["unsafe"], "confirm the stand-in")]

            page.evaluate("window.__same_page = true")
            page.locator("body").click(position={"x": 1, "y": 1})
            page.keyboard.press("x")  # remove
            expect(page.locator("#scan-id")).to_have_text(ids["safe"])
            expect(page.locator("#caption")).to_contain_text("Blurred")
            page.keyboard.press("a")  # approve
            expect(page.locator("#empty")).to_be_visible()
            assert page.evaluate("window.__same_page") is True  # no reload happened
        finally:
            browser.close()
    admin = {"X-API-Key": server["keys"]["admin"]}
    decisions = {i: httpx.get(f"{base}/v1/scans/{i}", headers=admin).json()["decision"] for i in ids.values()}
    assert decisions == {ids["unsafe"]: "remove", ids["safe"]: "approve"}
