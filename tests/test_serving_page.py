"""The page at ``/``, driven in a real browser: Debian's Chromium through Playwright.

``.ci/run`` installs Chromium (``apt-get install -y chromium``); Playwright's own browser
download is not reachable here, so it is pointed at ``/usr/bin/chromium``. The test fills the
table form and gets a prediction, types a prompt and sees the text stream in, and saves a
screenshot of each model's section (into ``$TENSORSMITH_SCREENSHOTS`` when set: the ones in
``docs/serving/`` were made so).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.serving_helpers import running_server, shared_store

CHROMIUM = Path("/usr/bin/chromium")

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="needs Debian's Chromium at /usr/bin/chromium (.ci/run installs it)",
)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_store(tmp_path_factory)


def test_a_person_tries_each_model_in_the_browser(store: Path, tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    shots = Path(os.environ.get("TENSORSMITH_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    with (
        running_server(store, ["houses", "poet", "moods"]) as live,
        sync_api.sync_playwright() as pw,
    ):
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.goto(live.url + "/")
        houses = page.locator("#model-houses")
        houses.locator("form.try").wait_for()
        assert "regression" in houses.locator(".meta").inner_text()
        assert houses.locator("table.metrics").count() == 1
        houses.locator("input[name=lotsize]").fill("5850")
        houses.locator("select[name=airco]").select_option("no")
        houses.locator("button").click()
        output = houses.locator("pre.output")
        output.filter(has_text="prediction:").wait_for(timeout=10_000)
        assert "houses version 1" in output.inner_text()
        houses.locator("img").first.wait_for()
        loaded = "[...document.querySelectorAll('#model-houses img')].every(i => i.naturalWidth)"
        page.wait_for_function(f"() => {loaded}")
        houses.screenshot(path=str(shots / "houses.png"))

        poet = page.locator("#model-poet")
        poet.locator("textarea[name=prompt]").fill("ROMEO.")
        poet.locator("input[name=max_tokens]").fill("40")
        poet.locator("button").click()
        streamed = poet.locator("pre.output[data-done=true]")
        streamed.wait_for(timeout=20_000)
        text = streamed.inner_text()
        assert text.startswith("ROMEO.") and len(text) > len("ROMEO.") + 10
        poet.screenshot(path=str(shots / "poet.png"))

        moods = page.locator("#model-moods")
        moods.locator("textarea[name=text]").fill("bright sunny glad")
        moods.locator("button").click()
        moods.locator("pre.output").filter(has_text="prediction:").wait_for(timeout=10_000)
        assert "up:" in moods.locator("pre.output").inner_text()
        moods.screenshot(path=str(shots / "moods.png"))
        browser.close()
    assert all((shots / f"{m}.png").stat().st_size > 1000 for m in ("houses", "poet", "moods"))
