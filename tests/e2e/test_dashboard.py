"""`agentfleet dashboard` in a real headless browser (Debian's chromium through selenium and
chromium-driver) on a real Docker fleet: ada and bob rewrite the same line of README, cy works on
a file of its own. The page lists the three agents and shows ada × bob as a conflict on README;
when cy then commits its own README, the page shows that conflict too without a reload. The
test's last picture of the page is docs/images/dashboard.png."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait

from tests.e2e.support import PROJECT_ROOT, GitServer
from tests.e2e.test_overlaps import run_cli, working_fleet

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"  # Debian's (scripts/lib/browser.sh)
SCREENSHOT = PROJECT_ROOT / "docs" / "images" / "dashboard.png"
WORK = {
    "ada": "printf 'ada was here\\n' > README && git commit -qam ada",
    "bob": "printf 'bob was here\\n' > README && git commit -qam bob",
    "cy": "printf 'cy\\n' > cy.txt && git add cy.txt && git commit -qm cy",
}
WAIT = 90.0  # a reading of the fleet every second; the first one clones nothing but takes a few


@pytest.fixture(scope="module")
def outputs(git_server: GitServer, make_stack, tmp_path_factory) -> Path:
    return working_fleet(git_server, make_stack("dashboard"), tmp_path_factory.mktemp("dashboard") / "outputs.json",
                         WORK)


@pytest.fixture
def page_url(outputs: Path) -> Iterator[str]:
    """`agentfleet dashboard` as a user runs it; its first line of output is the URL."""
    process = subprocess.Popen(
        [sys.executable, "-m", "agentfleet", "--outputs", str(outputs), "dashboard", "--interval", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=PROJECT_ROOT,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
        # Ctrl-C as in a terminal: a test run started in the background (`make test &`, a CI runner)
        # hands its children SIGINT ignored, and Python then keeps it ignored.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and "/?token=" in url, process.stderr.read()
        yield url
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 130  # Ctrl-C ends it, as it says


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1300,900"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


# The page redraws itself on every reading (each second), replacing its elements: the test reads it
# in one script, between two redraws, instead of holding elements a redraw makes stale.
READ_PAGE = """
const cells = {};
for (const td of document.querySelectorAll("#matrix td[data-pair]")) {
  const cell = td.querySelector(".cell");
  cells[td.dataset.pair] = {classes: [...cell.classList], text: cell.textContent};
}
return {
  rows: [...document.querySelectorAll("#status tbody tr")].map(
    (row) => ({agent: row.dataset.agent, health: row.cells[2].textContent})),
  cells: cells,
  summary: document.getElementById("summary").textContent,
  conflicts: [...document.querySelectorAll("#conflicts .conflict-line")].map((line) => line.textContent),
};
"""


def read_page(browser: webdriver.Chrome) -> dict:
    return browser.execute_script(READ_PAGE)


def test_the_page_lists_the_agents_and_shows_the_conflict_live(outputs: Path, page_url: str, browser):
    browser.get(page_url)
    wait = WebDriverWait(browser, WAIT)
    page = wait.until(lambda _: (reading := read_page(browser))["rows"] and reading)

    assert [row["agent"] for row in page["rows"]] == list(WORK)
    assert all(row["health"] == "ok" for row in page["rows"])
    assert page["cells"]["ada bob"] == {"classes": ["cell", "conflict"], "text": "README"}
    assert "conflict" in page["cells"]["bob ada"]["classes"]
    assert "apart" in page["cells"]["ada cy"]["classes"]
    assert page["summary"].startswith("3 agents, base main")
    assert "conflict predicted" in page["summary"]
    assert page["conflicts"] == ["ada × bob: README"]

    assert run_cli(outputs, "exec", "cy", "--", "printf 'cy was here\\n' > README && git commit -qam cy")[0] == 0
    page = wait.until(lambda _: "conflict" in (reading := read_page(browser))["cells"]["ada cy"]["classes"] and reading)
    assert page["cells"]["bob cy"]["text"] == "README"
    assert browser.current_url == page_url  # no reload: the page redrew itself
    browser.set_window_size(1300, browser.execute_script("return document.documentElement.scrollHeight") + 200)
    SCREENSHOT.parent.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(SCREENSHOT))
