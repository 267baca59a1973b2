#!/usr/bin/env python3
"""Drives the dashboards' pages in headless Chromium (selenium + Debian's
chromium-driver) and checks them.

    browser.py --url http://127.0.0.1:PORT --token TOKEN --expect expect.json \
               --screenshots DIR [--result result.json]

For every page: the token prompt accepts the token, the page renders without
a console error (browser log, level SEVERE), every chart's canvas is there
and not blank, and a PNG screenshot is saved. On the overview, the frontier
table's numbers must equal the expected ones (computed by the caller from
ClickHouse), and changing a filter in the bar must change them to the
expected filtered ones. On the playground, two variants answer side by side
and a thumbs-up is recorded. On an experiment's page, an action button asks
for confirmation (the dialog's button stays disabled until the id is typed,
and Cancel changes nothing), then the action is applied: the page shows the
new status and the decision log the reason.

The expect file (every part optional but `overview`):

    {"hash": "range=custom&from=..&to=..",          # the window (and filters) to open
     "admin": true,                                 # visit experiments/training too
     "overview": {
        "totals":   {"requests": 30, "cost_usd": 0.01, ...},      # stat cards (data-value)
        "frontier": [{"route", "variant", "model", "requests", "cost_usd", ...}],
        "filter":   {"name": "variant", "value": "b",
                     "totals": {...}, "frontier": [...]}},
     "playground": {"route": "r", "variants": ["a", "b"], "prompt": "hi",
                    "contains": ["..."], "thumbs": "up"},
     "action": {"experiment": "exp", "action": "pause",          # an experiment action,
                "status": "paused", "reason": "why"},            # clicked and confirmed
     "tolerance": 1e-6}                              # relative, for floats

Exits 0 when everything holds; otherwise prints each failure and exits 1.
The result file (optional) gets what the caller may check further: the
playground's inference ids, their costs as the page shows them, which one
got the thumbs, and the action's outcome.
"""

import argparse
import json
import math
import os
import sys
import time
import traceback

from selenium import webdriver
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

PAGES = ["overview", "latency", "reliability", "quality", "experiments", "training", "playground"]
ADMIN_PAGES = {"experiments", "training"}
# Pages whose charts need data to draw: at least this many canvases must be
# there when the window holds the caller's load.
MIN_CHARTS = {"overview": 2, "latency": 2, "reliability": 1}

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")

# Returns, per chart canvas on the page, whether it has drawn pixels: some
# pixel is not transparent and not all pixels are the same colour.
CANVAS_JS = """
const out = [];
for (const c of document.querySelectorAll('#view canvas')) {
  const r = {w: c.width, h: c.height, painted: false, distinct: 0,
             where: (c.closest('.card') && c.closest('.card').querySelector('h2')
                     ? c.closest('.card').querySelector('h2').textContent : '?')};
  try {
    if (c.width && c.height) {
      const ctx = c.getContext('2d');
      const d = ctx.getImageData(0, 0, c.width, c.height).data;
      const seen = new Set();
      for (let i = 0; i < d.length; i += 4 * 7) {
        if (d[i + 3] > 0) { r.painted = true; seen.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]); }
        if (seen.size > 3) break;
      }
      r.distinct = seen.size;
    }
  } catch (e) { r.error = String(e); }
  out.push(r);
}
return out;
"""

TABLE_JS = """
const t = document.querySelector('#view table[data-table="' + arguments[0] + '"]');
if (!t) return null;
const rows = [];
for (const tr of t.querySelectorAll('tbody tr')) {
  if (!tr.dataset.key) continue;
  const row = {_key: tr.dataset.key};
  for (const td of tr.querySelectorAll('td')) {
    row[td.dataset.col] = td.dataset.value === undefined ? null : td.dataset.value;
    row[td.dataset.col + '_text'] = td.textContent;
  }
  rows.push(row);
}
return rows;
"""

STATS_JS = """
const out = {};
for (const c of document.querySelectorAll('#view [data-stat]')) out[c.dataset.stat] = c.dataset.value;
return out;
"""


class Check:
    def __init__(self):
        self.failures = []

    def fail(self, msg):
        print(f"FAIL: {msg}", flush=True)
        self.failures.append(msg)

    def ok(self, msg):
        print(f"ok: {msg}", flush=True)


def close(a, b, tol):
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, str) or isinstance(b, str):
        try:
            a, b = float(a), float(b)
        except (TypeError, ValueError):
            return str(a) == str(b)
    return math.isclose(float(a), float(b), rel_tol=tol, abs_tol=1e-12)


def make_driver():
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1440,1000", "--force-device-scale-factor=1", "--hide-scrollbars",
              "--disable-extensions", "--no-first-run", "--disable-background-networking"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


class Browser:
    def __init__(self, args, check):
        self.args = args
        self.check = check
        self.url = args.url.rstrip("/")
        self.d = make_driver()
        self.shots = args.screenshots
        if self.shots:
            os.makedirs(self.shots, exist_ok=True)

    def console_errors(self, where):
        """SEVERE browser log entries since the last call."""
        try:
            logs = self.d.get_log("browser")
        except WebDriverException:
            return
        for e in logs:
            if e.get("level") == "SEVERE":
                self.check.fail(f"{where}: console error: {e.get('message')}")

    def wait(self, cond, timeout, what):
        try:
            return WebDriverWait(self.d, timeout, poll_frequency=0.1).until(lambda d: cond())
        except TimeoutException:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}") from None

    def js(self, script, *args):
        return self.d.execute_script(script, *args)

    def rendered(self):
        return self.js("return document.getElementById('view').dataset.rendered || ''")

    def goto(self, page, arg=None, query=""):
        h = f"#/{page}" + (f"/{arg}" if arg else "") + (f"?{query}" if query else "")
        self.js("location.hash = arguments[0]", h)
        want = page + (f"/{arg}" if arg else "")
        self.wait(lambda: self.rendered() in (want, "error"), 30, f"page {want} to render")
        if self.rendered() == "error":
            text = self.js("return document.getElementById('view').textContent")
            raise AssertionError(f"page {want} shows an error: {text.strip()[:300]}")
        # Let charts finish drawing (uPlot draws on the next frame).
        time.sleep(0.3)

    def screenshot(self, name):
        if not self.shots:
            return
        h = self.js("return Math.max(document.documentElement.scrollHeight, document.body.scrollHeight)")
        self.d.set_window_size(1440, max(900, min(int(h) + 40, 6000)))
        time.sleep(0.3)
        path = os.path.join(self.shots, f"{name}.png")
        self.d.save_screenshot(path)
        self.d.set_window_size(1440, 1000)
        print(f"screenshot: {path}", flush=True)

    def check_charts(self, where, minimum=0):
        charts = self.js(CANVAS_JS)
        blank = [c for c in charts if not c["painted"] or c["distinct"] < 2 or c.get("error")]
        for c in blank:
            self.check.fail(f"{where}: the chart '{c['where']}' is blank ({c})")
        if len(charts) < minimum:
            self.check.fail(f"{where}: {len(charts)} chart canvases, expected at least {minimum}")
        elif not blank:
            self.check.ok(f"{where}: {len(charts)} charts drawn")
        return charts

    # --------------------------------------------------------------- steps

    def sign_in(self, query):
        self.d.get(f"{self.url}/#/overview" + (f"?{query}" if query else ""))
        dlg = self.wait(lambda: self.d.find_element(By.ID, "token-dialog").get_attribute("open") is not None
                        and self.d.find_element(By.ID, "token-dialog"), 15, "the token prompt")
        assert dlg, "no token prompt"
        self.d.find_element(By.ID, "token-input").send_keys(self.args.token)
        self.d.find_element(By.ID, "token-submit").click()
        self.wait(lambda: self.rendered() in ("overview", "error"), 30, "the overview after signing in")
        scope = self.d.find_element(By.ID, "scope").text
        self.check.ok(f"signed in, scope shown: {scope!r}")
        if scope.startswith("tenant"):
            # A tenant sees neither the admin pages nor the tenant menu.
            shown = [a.text for a in self.d.find_elements(By.CSS_SELECTOR, "#nav a") if a.is_displayed()]
            if "Experiments" in shown or "Training" in shown:
                self.check.fail(f"a tenant is offered the admin pages: {shown}")
            if self.d.find_element(By.ID, "tenant-filter").is_displayed():
                self.check.fail("a tenant is offered the tenant filter")
        if self.d.find_element(By.ID, "token-dialog").get_attribute("open") is not None:
            self.check.fail("the token prompt is still open after a good token")
        return scope

    def check_overview(self, exp, tol, query):
        ov = exp.get("overview") or {}
        self.goto("overview", query=query)
        self.compare_overview(ov, tol, "overview")
        f = ov.get("filter")
        if f:
            sel = Select(self.d.find_element(By.CSS_SELECTOR, f"#filters select[name='{f['name']}']"))
            values = [o.get_attribute("value") for o in sel.options]
            if f["value"] not in values:
                self.check.fail(f"filter {f['name']}: {f['value']!r} is not among the menu's values {values}")
                return
            sel.select_by_value(f["value"])
            self.wait(lambda: f"{f['name']}=" in self.d.current_url and self.rendered() == "overview",
                      30, "the overview to re-render with the filter")
            time.sleep(0.3)
            before = ov.get("frontier") or []
            self.compare_overview(f, tol, f"overview with {f['name']}={f['value']}")
            if f.get("frontier") is not None and len(f["frontier"]) == len(before) and all(
                    any(close(a.get("requests"), b.get("requests"), tol) and a["variant"] == b["variant"] for b in before)
                    for a in f["frontier"]):
                self.check.fail("the filter's expected numbers equal the unfiltered ones: the check would prove nothing")
            self.screenshot("overview-filtered")
            # Back to the unfiltered view.
            self.goto("overview", query=query)

    def compare_overview(self, ov, tol, where):
        stats = self.js(STATS_JS)
        for k, v in (ov.get("totals") or {}).items():
            got = stats.get(k)
            got = None if got in (None, "") else got
            if close(got, v, tol):
                self.check.ok(f"{where}: card {k} = {v}")
            else:
                self.check.fail(f"{where}: card {k} shows {got}, expected {v}")
        want = ov.get("frontier")
        if want is None:
            return
        rows = self.js(TABLE_JS, "frontier")
        if rows is None:
            self.check.fail(f"{where}: no frontier table")
            return
        got = {r["_key"]: r for r in rows}
        keys = {f"{w['route']}|{w['variant']}|{w['model']}" for w in want}
        if set(got) != keys:
            self.check.fail(f"{where}: frontier rows {sorted(got)}, expected {sorted(keys)}")
        for w in want:
            key = f"{w['route']}|{w['variant']}|{w['model']}"
            r = got.get(key)
            if not r:
                continue
            for k, v in w.items():
                if k in ("route", "variant", "model"):
                    continue
                if not close(r.get(k), v, tol):
                    self.check.fail(f"{where}: frontier {key} {k} = {r.get(k)} (shown {r.get(k + '_text')!r}), expected {v}")
        if not any(f.startswith(where + ": frontier") for f in self.check.failures):
            self.check.ok(f"{where}: frontier table matches ({len(want)} rows)")

    def check_theme(self):
        """Dark theme: the toggle cycles system → light → dark."""
        toggle = self.d.find_element(By.ID, "theme-toggle")
        for _ in range(3):
            if self.js("return document.documentElement.dataset.theme || ''") == "dark":
                break
            toggle.click()
            time.sleep(0.2)
        bg = self.js("return getComputedStyle(document.body).backgroundColor")
        if self.js("return document.documentElement.dataset.theme || ''") != "dark":
            self.check.fail("the theme toggle does not reach dark")
        else:
            self.check.ok(f"dark theme, background {bg}")
        time.sleep(0.3)
        self.check_charts("overview (dark)", MIN_CHARTS["overview"])
        self.screenshot("overview-dark")
        while self.js("return document.documentElement.dataset.theme || ''") != "":
            toggle.click()
            time.sleep(0.1)

    def check_playground(self, pg, result):
        self.goto("playground")
        if pg.get("route"):
            Select(self.d.find_element(By.NAME, "pg-route")).select_by_value(pg["route"])
        va, vb = (pg.get("variants") or [None, None])[:2]
        if va:
            Select(self.d.find_element(By.NAME, "pg-a")).select_by_value(va)
        if vb:
            Select(self.d.find_element(By.NAME, "pg-b")).select_by_value(vb)
        box = self.d.find_element(By.NAME, "prompt")
        box.clear()
        box.send_keys(pg.get("prompt", "Say hello."))
        self.d.find_element(By.ID, "pg-send").click()
        self.wait(lambda: len(self.d.find_elements(By.CSS_SELECTOR, "[data-pane][data-done]")) == 2, 60,
                  "both playground answers")
        panes = self.d.find_elements(By.CSS_SELECTOR, "[data-pane]")
        ids = {}
        for p in panes:
            side = p.get_attribute("data-pane")
            text = p.find_element(By.CSS_SELECTOR, ".answer").text
            if p.get_attribute("data-done") != "ok":
                self.check.fail(f"playground {side}: {text[:300]}")
                continue
            if not text.strip():
                self.check.fail(f"playground {side}: empty answer")
            for want in pg.get("contains") or []:
                if want not in text and side == "A":
                    self.check.fail(f"playground {side}: answer {text[:200]!r} lacks {want!r}")
            m = p.find_element(By.CSS_SELECTOR, ".mono").text
            ids[side] = m.replace("inference ", "").strip() if m.startswith("inference ") else None
            self.check.ok(f"playground {side}: {len(text)} chars, {p.find_element(By.CSS_SELECTOR, '.answer-stats').text!r}")
        result["playground_ids"] = ids
        # The streamed answers' costs arrive after the streams, from their
        # events in ClickHouse.
        self.wait(lambda: all(p.get_attribute("data-cost") for p in panes), 30,
                  "both playground answers' costs")
        result["playground_costs"] = {p.get_attribute("data-pane"): float(p.get_attribute("data-cost")) for p in panes}
        self.check.ok(f"playground costs: {result['playground_costs']}")
        thumbs = pg.get("thumbs", "up")
        if thumbs and ids.get("A"):
            pane = next(p for p in panes if p.get_attribute("data-pane") == "A")
            pane.find_element(By.CSS_SELECTOR, f"button[data-thumb='{thumbs}']").click()
            self.wait(lambda: pane.get_attribute("data-feedback") is not None
                      or "not recorded" in pane.find_element(By.CSS_SELECTOR, ".recorded").text, 30, "the thumbs to be recorded")
            if pane.get_attribute("data-feedback") == thumbs:
                self.check.ok(f"playground: thumbs {thumbs} recorded for {ids['A']}")
                result["thumbs"] = {"inference_id": ids["A"], "value": thumbs == "up"}
            else:
                self.check.fail(f"playground: thumbs not recorded: {pane.find_element(By.CSS_SELECTOR, '.recorded').text}")
        elif thumbs:
            self.check.fail("playground: no inference id on answer A, so no thumbs")

    def check_action(self, spec, result):
        exp_id, action = spec["experiment"], spec["action"]
        self.goto("experiments", arg=exp_id)
        button = f"#view button[data-action='{action}']"

        def open_dialog():
            self.d.find_element(By.CSS_SELECTOR, button).click()
            self.wait(lambda: self.d.find_element(By.ID, "confirm-dialog").get_attribute("open") is not None,
                      5, f"the confirmation of {action}")

        ok = lambda: self.d.find_element(By.ID, "confirm-ok")  # noqa: E731
        # Cancel: nothing is applied.
        open_dialog()
        assert not ok().is_enabled(), "the confirm button is enabled before the id is typed"
        self.d.find_element(By.ID, "confirm-cancel").click()
        self.wait(lambda: self.d.find_element(By.ID, "confirm-dialog").get_attribute("open") is None,
                  5, "the dialog to close on Cancel")
        before = self.js("return document.querySelector('#view .page-head .badge').textContent")
        # A wrong id keeps the button disabled; the right one enables it.
        open_dialog()
        field = self.d.find_element(By.ID, "confirm-input")
        field.send_keys(exp_id + "x")
        assert not ok().is_enabled(), "the confirm button is enabled for a wrong id"
        field.clear()
        field.send_keys(exp_id)
        assert ok().is_enabled(), "the confirm button stays disabled for the right id"
        self.d.find_element(By.ID, "confirm-reason").send_keys(spec["reason"])
        self.screenshot("experiment-confirm")
        ok().click()
        want = spec["status"]
        self.wait(lambda: self.d.find_element(By.ID, "confirm-dialog").get_attribute("open") is None
                  and self.rendered() == f"experiments/{exp_id}"
                  and self.js("return document.querySelector('#view .page-head .badge').textContent") == want,
                  30, f"the experiment to show {want!r} (it showed {before!r} before)")
        text = self.js("return document.getElementById('view').textContent")
        assert spec["reason"] in text, f"the decision log does not show the reason {spec['reason']!r}"
        result["action"] = {"experiment": exp_id, "action": action, "before": before, "after": want}
        self.check.ok(f"{action} on {exp_id}: confirmed, {before} → {want}, reason in the log")
        self.screenshot("experiment-after-action")

    def check_csv(self):
        """The CSV link downloads through the API with the header (a Blob)."""
        n = self.js("""
            window.__csv = null;
            const orig = URL.createObjectURL;
            URL.createObjectURL = (b) => { window.__csv = b; return orig.call(URL, b); };
            const a = document.querySelector('#view [data-csv="frontier"]');
            if (!a) return 0; a.click(); return 1;""")
        if not n:
            self.check.fail("overview: no CSV link on the frontier table")
            return
        self.wait(lambda: self.js("return window.__csv !== null"), 15, "the CSV download")
        text = self.d.execute_async_script("const cb = arguments[0]; window.__csv.text().then(cb);")
        first = text.splitlines()[0] if text else ""
        if "variant" in first and "requests" in first:
            self.check.ok(f"CSV download: {first[:80]!r}")
        else:
            self.check.fail(f"CSV download: unexpected header {first[:200]!r}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--expect", required=True)
    ap.add_argument("--screenshots", default="")
    ap.add_argument("--result", default="")
    args = ap.parse_args()
    with open(args.expect) as f:
        exp = json.load(f)
    tol = float(exp.get("tolerance", 1e-6))
    query = exp.get("hash", "")
    check = Check()
    result = {}
    b = None
    def step(name, fn, *a):
        """One check; a failure is reported and the next check still runs."""
        try:
            fn(*a)
        except AssertionError as e:
            check.fail(f"{name}: {e}")
        except Exception as e:  # noqa: BLE001 (a crash of a check is a failure too)
            traceback.print_exc()
            check.fail(f"{name}: {type(e).__name__}: {e}")
        finally:
            b.console_errors(name)

    def overview():
        b.check_overview(exp, tol, query)
        b.check_charts("overview", MIN_CHARTS["overview"])
        b.check_csv()
        b.screenshot("overview")

    def page_and_detail(page):
        b.goto(page, query=query)
        b.check_charts(page, MIN_CHARTS.get(page, 0))
        b.screenshot(page)
        if page not in ADMIN_PAGES:
            return
        # The detail view of the newest experiment / run.
        link = b.js("const a = document.querySelector('#view table tbody a'); return a ? a.getAttribute('href') : null")
        if not link:
            check.ok(f"{page}: no rows, no detail view to visit")
            return
        path = link.split("?")[0].lstrip("#/")
        _, arg = path.split("/", 1)
        b.goto(page, arg=arg, query=query)
        b.check_charts(f"{page} detail", 1)
        b.console_errors(f"{page} detail")
        b.screenshot(f"{page}-detail")

    def playground():
        if exp.get("playground") is not None:
            b.check_playground(exp["playground"], result)
        else:
            b.goto("playground", query=query)
        b.screenshot("playground")

    def action():
        b.check_action(exp["action"], result)

    try:
        b = Browser(args, check)
        scope = b.sign_in(query)
        b.console_errors("sign in")
        admin = exp.get("admin", scope == "admin")
        step("overview", overview)
        step("theme", b.check_theme)
        for page in PAGES:
            if page == "overview" or (page in ADMIN_PAGES and not admin):
                continue
            if page == "playground":
                step("playground", playground)
            else:
                step(page, page_and_detail, page)
        # Last: it changes the experiment the pages above show.
        if admin and exp.get("action") is not None:
            step("experiment action", action)
    except AssertionError as e:
        check.fail(str(e))
    except Exception as e:  # noqa: BLE001
        traceback.print_exc()
        check.fail(f"{type(e).__name__}: {e}")
    finally:
        if b is not None:
            try:
                if check.failures:
                    b.screenshot("failure")
            except Exception:  # noqa: BLE001
                pass
            b.d.quit()
    if args.result:
        with open(args.result, "w") as f:
            json.dump(result, f, indent=1)
    if check.failures:
        print(f"\n{len(check.failures)} browser check(s) failed:", file=sys.stderr)
        for m in check.failures:
            print(f"  - {m}", file=sys.stderr)
        sys.exit(1)
    print("\nall browser checks passed")


if __name__ == "__main__":
    main()
