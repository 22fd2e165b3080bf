#!/usr/bin/env python3
"""Loads the status page of a running `usersync serve` in headless Chromium
(Debian's chromium and chromium-driver, through python3-selenium) and
prints what it found as one JSON object; tests/lua/test_status_browser.lua
asserts on it.

    status_browser.py SPEC.json

SPEC: { "base": "http://127.0.0.1:PORT", "authorization": "Basic ...",
        "out": "directory for screenshots", "pages": ["/", ...],
        "widths": [375, 1280], "sync_entry": "main" }

What it does, in order:
  1. at 1280 px loads /, keeps its navigation timing and byte counts;
  2. presses Tab: the first stop must be the skip link, visibly focused;
  3. clicks "Sync <entry> now" (a real form POST with the page's token,
     cookie and Origin), waits until the 303's page has replaced the old
     one; then reloads / until the run it
     started is listed and none is in progress;
  4. at each width, loads each page: document and viewport widths, elements
     that reach past the viewport, accessibility facts, the visible text,
     the links to runs, and a full-page screenshot (PNG) in `out`.
"""
import base64
import json
import os
import sys
import tempfile
import time

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.common.exceptions import (StaleElementReferenceException, TimeoutException,
                                        WebDriverException)
from selenium.webdriver.support.ui import WebDriverWait

MEASURE = r"""
const iw = window.innerWidth;
// An element inside a box that clips its overflow (a visually hidden table
// head, a scrolling region) counts only when that box itself fits.
function clipped(e) {
  for (let a = e.parentElement; a && a !== document.body; a = a.parentElement) {
    if (getComputedStyle(a).overflowX !== 'visible') {
      const r = a.getBoundingClientRect();
      return r.right <= iw + 0.5 && r.left >= -0.5;
    }
  }
  return false;
}
const wide = [];
for (const e of document.querySelectorAll('body *')) {
  if (e.closest('.skip') || clipped(e)) continue;
  const r = e.getBoundingClientRect();
  if (r.width > 0 && (r.right > iw + 0.5 || r.left < -0.5)) {
    wide.push(e.tagName.toLowerCase() + (e.className ? '.' + e.className : '') + ' ' + Math.round(r.right));
  }
}
const unlabelled = [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
  .filter(i => !(i.id && document.querySelector('label[for="' + i.id + '"]'))).length;
const emptyButtons = [...document.querySelectorAll('button')].filter(b => !b.textContent.trim()).length;
return {
  scroll_width: document.documentElement.scrollWidth,
  inner_width: iw,
  scroll_height: document.documentElement.scrollHeight,
  wide: wide.slice(0, 20),
  lang: document.documentElement.lang,
  title: document.title,
  h1: [...document.querySelectorAll('h1')].map(h => h.textContent),
  h2: [...document.querySelectorAll('h2')].map(h => h.textContent),
  scripts: document.scripts.length,
  unlabelled_inputs: unlabelled,
  empty_buttons: emptyButtons,
  th_without_scope: [...document.querySelectorAll('thead th')].filter(t => !t.getAttribute('scope')).length,
  run_links: [...document.querySelectorAll('a[href^="/status/runs/"]')].map(a => a.textContent),
  text: document.body.innerText,
  css_loaded: getComputedStyle(document.body).margin === '0px',
};
"""

TIMING = r"""
const n = performance.getEntriesByType('navigation')[0];
const res = performance.getEntriesByType('resource').map(r => ({
  name: r.name, transfer: r.transferSize, body: r.encodedBodySize, duration: r.duration}));
return { document_body: n.encodedBodySize, document_transfer: n.transferSize,
  server_ms: n.responseStart - n.requestStart, response_end_ms: n.responseEnd - n.startTime,
  dom_content_loaded_ms: n.domContentLoadedEventEnd - n.startTime,
  load_ms: n.loadEventEnd - n.startTime, resources: res };
"""


def driver_for():
    opts = Options()
    opts.binary_location = "/usr/bin/chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--hide-scrollbars", "--no-first-run", "--disable-extensions",
              "--window-size=1280,900", "--user-data-dir=" + tempfile.mkdtemp(prefix="usersync-chromium-")):
        opts.add_argument(a)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)


STYLED = r"""
if (document.readyState !== 'complete') return false;
const sheets = [...document.styleSheets];
return sheets.length > 0 && sheets.every(s => { try { return s.cssRules.length > 0; } catch (e) { return false; } });
"""


def load(d, url):
    """Opens url and waits (generously: a slow or sanitised build) until the page has loaded
    and its style sheets are parsed, so what is measured is the styled page. A sheet that
    never arrives ends the wait; the measure then reports it (css_loaded false)."""
    d.get(url)
    try:
        WebDriverWait(d, 120, poll_frequency=0.1).until(lambda drv: drv.execute_script(STYLED))
    except TimeoutException:
        pass


def set_width(d, width, height=900):
    d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600})


def screenshot(d, path, width, height):
    shot = d.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": width, "height": min(height, 8000), "scale": 1}})
    with open(path, "wb") as f:
        f.write(base64.b64decode(shot["data"]))


def main():
    spec = json.load(open(sys.argv[1]))
    base, out = spec["base"], spec["out"]
    os.makedirs(out, exist_ok=True)
    result = {"pages": {}}
    d = driver_for()
    try:
        d.set_page_load_timeout(120)
        d.execute_cdp_cmd("Network.enable", {})
        d.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Authorization": spec["authorization"]}})
        d.execute_cdp_cmd("Network.setCacheDisabled", {"cacheDisabled": True})
        set_width(d, 1280)
        d.get(base + "/")
        result["timing"] = d.execute_script(TIMING)

        # keyboard: the first Tab stop is the skip link, with a visible outline
        d.find_element(By.TAG_NAME, "body").send_keys(Keys.TAB)
        result["first_focus"] = d.execute_script(
            "const e = document.activeElement; const s = getComputedStyle(e); const r = e.getBoundingClientRect();"
            "return { cls: e.className, text: e.textContent, outline: s.outlineStyle + ' ' + s.outlineWidth,"
            " visible: r.left >= 0 && r.top >= 0 && r.width > 0 };")

        # sync now through the form, as a person would
        before = len(d.find_elements(By.CSS_SELECTOR, 'a[href^="/status/runs/"]'))
        button = d.find_element(By.XPATH, "//button[normalize-space()='Sync %s now']" % spec["sync_entry"])
        # click() returns once the click is dispatched, not once the form's
        # POST and its 303 have loaded the next page: until then current_url
        # is still the old page's. Wait (generously: a loaded machine) for the
        # old document to go and the new one to finish loading.
        old_root = d.find_element(By.TAG_NAME, "html")
        button.click()

        def arrived(drv):
            try:
                old_root.tag_name
                return False
            except StaleElementReferenceException:
                pass
            except WebDriverException as e:
                # chromedriver's other spelling of a stale element, met while
                # the old document is being replaced
                if "does not belong to the document" not in str(e):
                    raise
            try:
                return drv.execute_script("return document.readyState") == "complete"
            except WebDriverException:
                return False  # the new document is not there to ask yet

        try:
            WebDriverWait(d, 120, poll_frequency=0.2).until(arrived)
        except TimeoutException:
            pass  # the test then fails on what the browser shows
        result["after_click"] = {"url": d.current_url,
                                 "notice": d.execute_script(
                                     "const n = document.querySelector('.notice'); return n && n.textContent;")}
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            d.get(base + "/")
            text = d.execute_script("return document.body.innerText")
            links = len(d.find_elements(By.CSS_SELECTOR, 'a[href^="/status/runs/"]'))
            if "No run in progress." in text and links > before:
                break
            time.sleep(0.5)

        for width in spec["widths"]:
            for path in spec["pages"]:
                set_width(d, width)
                load(d, base + path)
                m = d.execute_script(MEASURE)
                slug = "overview" if path == "/" else path.replace("/status/", "").strip("/").replace("/", "-")
                top = 812 if width < 600 else 900
                screenshot(d, os.path.join(out, "status-%s-%d-top.png" % (slug, width)), width, top)
                set_width(d, width, m["scroll_height"])
                name = "status-%s-%d.png" % (slug, width)
                screenshot(d, os.path.join(out, name), width, m["scroll_height"])
                m["screenshot"] = os.path.join(out, name)
                if path == "/":
                    # the problems section alone: the stacked cards on a phone
                    for el in d.find_elements(By.CSS_SELECTOR, 'section[aria-labelledby="h-problems"]'):
                        el.screenshot(os.path.join(out, "status-overview-%d-problems.png" % width))
                result["pages"]["%s@%d" % (path, width)] = m
    finally:
        d.quit()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
