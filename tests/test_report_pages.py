"""The report pages in a real headless browser (Debian's chromium through chromedriver), against a real
server with API keys; plus the HTTP rules around them (login cookie, redirects, CSV, report JSON)."""

from __future__ import annotations

import os
import random
import re
import shutil
from pathlib import Path

import httpx
import pytest
from colecache_client.spaces import get_space

pytestmark = pytest.mark.integration

SPACE = get_space("nb201")
KEY = "page-test-key"
FAST = {"head": {"epochs": 60}}
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def _value(cell, rng) -> float:
    return 50.0 + 4 * cell.ops.count("nor_conv_3x3") - 3 * cell.ops.count("none") + rng.gauss(0, 1)


def _search_like_history(client: httpx.Client, name: str = "c10 <search> $1$") -> tuple[str, dict]:
    """A study with 60 observations, 50 of them predicted first (5 rounds of predict-then-observe)."""
    rng = random.Random(0)
    cells = SPACE.dedupe(SPACE.sample(rng) for _ in range(200))[:60]
    sid = client.post("/studies", json={"name": name, "objective": "test_acc", "surrogate": FAST}).json()["id"]
    post = lambda part: client.post(  # noqa: E731
        f"/studies/{sid}/observations",
        json={"observations": [{"spec": c.to_string(), "value": _value(c, rng)} for c in part]},
    )
    assert post(cells[:10]).status_code == 200
    for start in range(10, 60, 10):
        assert client.post(f"/studies/{sid}/predict", json={"specs": [c.to_string() for c in cells[start:]]}).is_success
        assert post(cells[start : start + 10]).status_code == 200
    report = client.get(f"/studies/{sid}/report").json()
    return sid, report


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory):
    from conftest import ServerProcess

    folder = tmp_path_factory.mktemp("pages")
    server = ServerProcess(
        {"COLECACHE_DATA_DIR": str(folder / "data"), "COLECACHE_LOG_LEVEL": "warning", "COLECACHE_API_KEYS": KEY},
        folder / "server.log",
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def study(keyed_server):
    with keyed_server.client(headers={"Authorization": f"Bearer {KEY}"}) as client:
        return _search_like_history(client)


@pytest.fixture
def browser():
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        if os.environ.get("CI"):
            pytest.fail("chromium and chromedriver are needed in CI (.ci/run installs them)")
        pytest.skip("no chromium / chromedriver here (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1600"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def arrive(driver, url: str) -> None:
    """Wait for a navigation a click started (a click returns before the next page has loaded)."""
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 20).until(expected_conditions.url_to_be(url))
    WebDriverWait(driver, 20).until(lambda d: d.execute_script("return document.readyState") == "complete")


def _problems(driver) -> list[dict]:
    """Console entries a user would see as errors or warnings (resource failures included)."""
    return [entry for entry in driver.get_log("browser") if entry["level"] in ("SEVERE", "WARNING")]


def test_report_page_in_a_real_browser(keyed_server, study, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    sid, report = study
    # A browser following a study's API link is sent to the login form, then to the report page.
    browser.get(f"{keyed_server.url}/studies/{sid}")
    assert "/ui/login" in browser.current_url
    browser.find_element(By.ID, "key").send_keys("wrong-key")
    browser.find_element(By.CSS_SELECTOR, "form.login button").click()
    WebDriverWait(browser, 20).until(lambda d: d.find_elements(By.ID, "login-error"))
    assert "not valid" in browser.find_element(By.ID, "login-error").text
    # The refused key is the one console error so far (the form answers 401), and the only one expected.
    refused = f"{keyed_server.url}/ui/login - Failed to load resource: the server responded with a status of 401"
    assert [e["message"] for e in _problems(browser)] == [refused + " (Unauthorized)"]
    browser.find_element(By.ID, "key").send_keys(KEY)
    browser.find_element(By.CSS_SELECTOR, "form.login button").click()
    arrive(browser, f"{keyed_server.url}/ui/studies/{sid}")
    assert browser.title.startswith("c10 <search> $1$")  # escaped, shown literally

    # Four plots, each a drawn SVG with content, and the figures table says what the JSON says.
    for name in ("best_so_far", "predicted_vs_observed", "tau_over_time", "calibration"):
        figure = browser.find_element(By.ID, f"plot-{name}")
        svg = figure.find_element(By.TAG_NAME, "svg")
        assert svg.size["width"] > 300 and svg.size["height"] > 200, name
        assert len(figure.find_elements(By.CSS_SELECTOR, "path")) > 5, name
    assert report["online"]["n_pairs"] == 50
    cells = {
        row.find_element(By.TAG_NAME, "th").text: [td.text for td in row.find_elements(By.TAG_NAME, "td")]
        for row in browser.find_elements(By.CSS_SELECTOR, "#figures tbody tr")
    }
    assert cells["Kendall tau"][0] == f"{report['online']['kendall_tau']:.3f}"
    assert cells["Pairs (prediction, then observation)"][0] == "50"
    assert _problems(browser) == []
    browser.save_screenshot(str(tmp_path / "report.png"))
    if os.environ.get("COLECACHE_SCREENSHOT"):  # how docs/report.png is made
        browser.save_screenshot(os.environ["COLECACHE_SCREENSHOT"])

    # The list links to the page; logging out sends the next visit back to the form.
    browser.get(f"{keyed_server.url}/ui")
    link = browser.find_element(By.LINK_TEXT, "c10 <search> $1$")
    link.click()
    arrive(browser, f"{keyed_server.url}/ui/studies/{sid}")
    browser.find_element(By.CSS_SELECTOR, "header form button").click()
    WebDriverWait(browser, 20).until(lambda d: "/ui/login" in d.current_url)
    browser.get(f"{keyed_server.url}/ui")
    assert "/ui/login" in browser.current_url
    assert _problems(browser) == []


def test_page_rules_over_http(keyed_server, study):
    sid, _ = study
    with httpx.Client(base_url=keyed_server.url, timeout=60) as anonymous:
        # Pages without the cookie go to the form (no 401 JSON for a person); the API stays bearer-only.
        page = anonymous.get(f"/ui/studies/{sid}")
        assert page.status_code == 303 and page.headers["location"] == f"/ui/login?next=%2Fui%2Fstudies%2F{sid}"
        assert anonymous.get(f"/studies/{sid}").status_code == 401
        # The form never sends anyone off-site.
        for target in ("//evil.example/ui", "https://evil.example/", "/studies/x", "/ui\\@evil"):
            answer = anonymous.post("/ui/login", data={"key": KEY, "next": target})
            assert answer.status_code == 303 and answer.headers["location"] == "/ui", target
        good = anonymous.post("/ui/login", data={"key": KEY, "next": f"/ui/studies/{sid}"})
        cookie = good.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/ui" in cookie
        # The cookie opens pages only, never the JSON API (no cross-site request can use it there).
        assert anonymous.get(f"/studies/{sid}/report").status_code == 401
        page = anonymous.get(f"/ui/studies/{sid}")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "default-src 'none'" in page.headers["content-security-policy"] and "<script" not in page.text
        missing = anonymous.get("/ui/studies/0123abcd")
        assert missing.status_code == 404 and "No study" in missing.text
        # Four SVGs on one page: every element id is unique and every reference resolves in its own panel.
        ids = re.findall(r'\bid="([^"]+)"', page.text)
        assert len(ids) == len(set(ids)) > 100
        assert set(re.findall(r"url\(#([^)]+)\)", page.text)) <= set(ids)
        # The page's own links open with the cookie (the JSON API would need the bearer header).
        assert f'href="/ui/studies/{sid}/observations.csv"' in page.text
        exported = anonymous.get(f"/ui/studies/{sid}/observations.csv")
        assert exported.status_code == 200 and len(exported.text.splitlines()) == 61
        assert "+00:00" in exported.text.splitlines()[1]  # times say their zone
        as_json = anonymous.get(f"/ui/studies/{sid}/report.json", params={"window": 10})
        assert as_json.status_code == 200 and as_json.json()["recent"]["window"] == 10
        assert "Latest 10 pairs" in anonymous.get(f"/ui/studies/{sid}", params={"window": 10}).text
        # A browser opening the server's root lands on the list; logging out by link works too.
        root = anonymous.get("/", headers={"Accept": "text/html,*/*;q=0.8"})
        assert root.status_code == 303 and root.headers["location"] == "/ui"
        out = anonymous.get("/ui/logout")
        assert out.status_code == 303 and 'colecache_key=""' in out.headers["set-cookie"]
        anonymous.cookies.clear()
        assert anonymous.get(f"/ui/studies/{sid}/observations.csv").status_code == 303
    with keyed_server.client(headers={"Authorization": f"Bearer {KEY}"}) as client:
        # API clients keep getting JSON from the same URL a browser is redirected from.
        assert client.get(f"/studies/{sid}").json()["id"] == sid
        assert client.get(f"/studies/{sid}", headers={"Accept": "text/html"}).status_code == 303
        assert client.get(f"/studies/{sid}/report", params={"window": 2}).status_code == 422
        assert client.get("/studies/0123abcd/report").status_code == 404
        # Another key's studies are not on this key's pages.
        assert "ui" not in client.get("/openapi.json").json()["paths"]


def test_csv_export_streams_every_observation(keyed_server, study):
    import csv
    import io

    sid, report = study
    with keyed_server.client(headers={"Authorization": f"Bearer {KEY}"}) as client:
        response = client.get(f"/studies/{sid}/observations", params={"format": "csv"})
        assert response.headers["content-type"] == "text/csv; charset=utf-8"
        assert response.headers["content-disposition"] == 'attachment; filename="c10_search_1-observations.csv"'
        rows = list(csv.DictReader(io.StringIO(response.text)))
        listed = client.get(f"/studies/{sid}/observations").json()["observations"]
        assert len(rows) == report["n_observations"] == len(listed) == 60
        for row, item in zip(rows, listed):
            assert row["spec"] == item["spec"] and float(row["value"]) == item["value"] and int(row["id"]) == item["id"]
        page = client.get(f"/studies/{sid}/observations", params={"format": "csv", "limit": 7, "offset": 50})
        assert len(page.text.splitlines()) == 1 + 7
        assert client.get(f"/studies/{sid}/observations", params={"format": "xml"}).status_code == 422


def test_pages_need_no_login_on_an_open_server(default_server):
    with default_server.client() as client:
        sid = client.post("/studies", json={"name": "open", "surrogate": FAST}).json()["id"]
        assert client.get("/ui/login", follow_redirects=False).headers["location"] == "/ui"
        listing = client.get("/ui")
        assert listing.status_code == 200 and f"/ui/studies/{sid}" in listing.text
        page = client.get(f"/ui/studies/{sid}")
        assert page.status_code == 200 and page.text.count("<svg") == 4 and "no observations yet" in page.text
