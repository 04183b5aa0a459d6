"""The report in a real browser: headless Chromium via selenium (Debian packages chromium + chromium-driver).

Opens an 8-model report (one model named like a script tag) from disk with the network unused, and
checks: no console errors, no script ran, every section and figure rendered, the model name shown as
text. A full-page screenshot goes to tmp_path and, when BEYOND_INET_TEST_ARTIFACTS is set, to
``$BEYOND_INET_TEST_ARTIFACTS/report-screenshot.png``.
"""
from __future__ import annotations

import base64
import importlib.util
import os
import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1400,1000")


def _report_helpers():
    """test_report.py's run builder, loaded by path (tests have no packages)."""
    spec = importlib.util.spec_from_file_location("_report_helpers", Path(__file__).with_name("test_report.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def driver(tmp_path):
    pytest.importorskip("selenium")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chrome = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    chromedriver = shutil.which("chromedriver")
    if not chrome or not chromedriver:
        pytest.skip("headless Chromium / chromedriver not installed (apt-get install chromium chromium-driver)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chrome
    for flag in FLAGS + (f"--user-data-dir={tmp_path / 'chrome-profile'}",):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        d = webdriver.Chrome(service=Service(chromedriver), options=opts)
    except Exception as e:  # a broken browser install is not a report bug
        pytest.skip(f"cannot start headless Chromium: {e}")
    yield d
    d.quit()


def _full_page_png(d) -> bytes:
    m = d.execute_cdp_cmd("Page.getLayoutMetrics", {})
    size = m.get("cssContentSize") or m["contentSize"]
    shot = d.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 16000), "scale": 1}})
    return base64.b64decode(shot["data"])


def test_report_in_headless_chromium(driver, tmp_path):
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    from beyond_inet.report.html import write_report

    h = _report_helpers()
    spec = {h.EVIL: (170, 0.9)}
    spec.update({f"timm:model_{i}.tag_{i}": (60 + 15 * i, 0.9) for i in range(7)})
    out = h.build_run(tmp_path / "run", spec)
    path = Path(write_report(out, n_boot=100))

    driver.get(path.resolve().as_uri())
    assert driver.title.startswith("beyond-inet report")
    with pytest.raises(NoAlertPresentException):
        _ = driver.switch_to.alert.text  # the script-tag model name did not run
    assert driver.execute_script("return document.scripts.length") == 0

    for sid in h.SECTION_IDS:
        assert driver.find_element(By.ID, sid).is_displayed() or sid == "skips", sid
    for name in h.FIGURES:
        img = driver.find_element(By.CSS_SELECTOR, f"#fig-{name} img")
        ok = driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", img)
        assert ok, name
    summary = driver.find_element(By.CSS_SELECTOR, "#summary table")
    assert h.EVIL in summary.text
    assert len(summary.find_elements(By.CSS_SELECTOR, "tbody tr")) == 8

    severe = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    assert not severe, severe

    png = _full_page_png(driver)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    (tmp_path / "report-screenshot.png").write_bytes(png)
    dest = os.environ.get("BEYOND_INET_TEST_ARTIFACTS")
    if dest:
        Path(dest).mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / "report-screenshot.png", Path(dest) / "report-screenshot.png")


# Every element of the header, navigation, summary and data notes: inside the viewport, and none scrolls sideways.
OVERFLOW_JS = """
const w = document.documentElement.clientWidth, bad = [];
if (document.scrollingElement.scrollWidth > window.innerWidth)
  bad.push('page: scrollWidth ' + document.scrollingElement.scrollWidth + ' > ' + window.innerWidth);
for (const root of document.querySelectorAll('header, nav, #summary, #data')) {
  for (const el of [root, ...root.querySelectorAll('*')]) {
    const r = el.getBoundingClientRect(), name = el.tagName + (el.id ? '#' + el.id : '') + ' ' + el.className
      + ' "' + (el.textContent || '').trim().slice(0, 40) + '"';
    if (r.width === 0 && r.height === 0) continue;
    if (r.right > w + 0.5 || r.left < -0.5) bad.push(name + ': x ' + r.left + '..' + r.right + ' of ' + w);
    if (el.scrollWidth > el.clientWidth + 1 && getComputedStyle(el).overflowX !== 'visible')
      bad.push(name + ': scrolls sideways (' + el.scrollWidth + ' > ' + el.clientWidth + ')');
  }
}
return bad;
"""


@pytest.mark.parametrize("width", [1280, 390])
def test_navigation_and_summary_fit_the_window(driver, tmp_path, width):
    """At a laptop's and a phone's width nothing of the header, navigation, summary or data notes overflows
    sideways: the page does not scroll horizontally and no element there scrolls or sticks out."""
    from selenium.webdriver.common.by import By

    from beyond_inet.report.html import write_report

    h = _report_helpers()
    spec = {h.EVIL: (170, 0.9)}
    spec.update({f"timm:a_model_with_a_rather_long_name_{i}.pretrained_on_something_big": (60 + 15 * i, 0.9)
                 for i in range(7)})
    out = h.build_run(tmp_path / "run", spec)
    path = Path(write_report(out, n_boot=100))
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False})
    driver.get(path.resolve().as_uri())
    assert driver.execute_script("return window.innerWidth") == width
    summary = driver.find_element(By.CSS_SELECTOR, "#summary table")
    assert len(summary.find_elements(By.CSS_SELECTOR, "tbody tr")) == 8 and h.EVIL in summary.text
    bad = driver.execute_script(OVERFLOW_JS)
    assert not bad, "\n".join(bad[:20])
