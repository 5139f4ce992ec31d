"""The scheduler's web view in a real headless Chromium, on a real 3-node local cluster.

The page `mctl cluster up` prints is opened in Debian's chromium through
chromedriver (Selenium): it lists the three nodes and the replicas of the
demo workload and of a second one, a replica added by a scale-up through
the CLI appears without the page reloading (the live event stream), and the
graphs have points. Without the token the page is refused.

MCTL_WEBVIEW_SCREENSHOT=PATH saves a screenshot of the page there (how
docs/webview.png is made).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Cluster  # the e2e fixtures module

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

WORKER = """\
apiVersion: mctl/v1
kind: Workload
metadata:
  name: worker
spec:
  replicas: {replicas}
  image: busybox
  command: ["/bin/sh", "-c"]
  # Some work now and then, so that the graphs have something to draw.
  args: ["while true; do i=0; while [ $i -lt 3000 ]; do i=$((i+1)); done; sleep 1; done"]
  resources:
    cpu: 100m
    memory: 16Mi
    pids: 8
"""


@pytest.fixture(scope="module")
def cluster(cluster_factory) -> Cluster:
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install chromium "
                    "chromium-driver)")
    pytest.importorskip("selenium", reason="needs selenium (pip install selenium)")
    return cluster_factory(3)


@pytest.fixture(scope="module")
def browser(cluster: Cluster) -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-proxy-server", "--window-size=1360,1000", "--hide-scrollbars"):
        options.add_argument(arg)
    # The console's messages, to check the page ran without script errors or CSP refusals.
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    yield driver
    driver.quit()


def web_address(cluster: Cluster) -> str:
    """What `cluster up` prints for the web view (asked again: it says it when running)."""
    out = cluster.mctl("cluster", "up", "--nodes", "3").stdout
    found = re.search(r"web view: open (http://127\.0\.0\.1:\d+/\?token=\S+) in a browser", out)
    assert found, out
    return found.group(1)


def status_of(url: str) -> int:
    try:
        with HTTP.open(url, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as e:
        return e.code


def wait(what: str, predicate, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def rows(driver, selector: str, attribute: str) -> list[tuple[str, str]]:
    """(attribute, text) of each element `selector` finds, read in one go: the page
    replaces its tables on every update, so elements found earlier go stale. A table
    row's text is its cells' joined by "|"."""
    return [tuple(pair) for pair in driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map(e => [e.getAttribute("
        "arguments[1]), e.tagName === 'TR' ? [...e.cells].map(c => c.textContent).join('|')"
        " : e.textContent])", selector, attribute)]


def replica_rows(driver, workload: str) -> list[str]:
    return [name for name, _ in rows(driver, f'div[data-workload="default/{workload}"] '
                                             "tr[data-replica]", "data-replica")]


def test_the_page_is_refused_without_the_token(cluster: Cluster):
    address = web_address(cluster)
    base = address.split("?")[0]
    assert status_of(base) == 401
    assert status_of(base + "events") == 401
    assert status_of(base + "?token=not-the-token") == 403
    token_file = cluster.dir / "web.token"
    assert oct(token_file.stat().st_mode & 0o777) == "0o600"
    assert address.endswith(token_file.read_text().strip())
    # Over TLS on the same port, an admin certificate needs no token; an agent's is refused.
    port = int(base.rsplit(":", 1)[1].rstrip("/"))
    assert https_status(cluster, port, "admin") == 200
    assert https_status(cluster, port, "node1") == 401


def https_status(cluster: Cluster, port: int, who: str) -> int:
    """GET / over TLS with `who`'s certificate, checking the scheduler's as curl would with
    --cacert and --resolve mctl-scheduler:PORT:127.0.0.1 (docs/webview.md)."""
    pki = cluster.dir / "pki"
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    ctx.load_cert_chain(str(pki / f"{who}.crt"), str(pki / f"{who}.key"))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname="mctl-scheduler") as tls:
        tls.sendall(b"GET / HTTP/1.1\r\nHost: mctl-scheduler\r\nConnection: close\r\n\r\n")
        return int(tls.recv(64).split()[1])


def test_the_page_shows_the_cluster_live(cluster: Cluster, browser, tmp_path: Path):
    from selenium.webdriver.common.by import By

    driver = browser
    cluster.mctl("apply", "-f", str(EXAMPLES / "web.yaml"))
    worker = tmp_path / "worker.yaml"
    worker.write_text(WORKER.format(replicas=2))
    cluster.mctl("apply", "-f", str(worker))

    driver.get(web_address(cluster))
    # The token went into an HttpOnly cookie and out of the address.
    wait("the redirect to /", lambda: "token" not in driver.current_url)
    assert driver.current_url.endswith("/"), driver.current_url
    assert driver.execute_script("return document.cookie") == ""
    wait("the stream to connect",
         lambda: driver.find_element(By.ID, "link").text == "live")
    nodes = wait("3 Ready nodes listed", lambda: [
        name for name, text in rows(driver, "#nodes tr[data-node]", "data-node")
        if "Ready" in text and "NotReady" not in text])
    assert sorted(nodes) == ["node1", "node2", "node3"]
    wait("3 web replicas Running", lambda: sum(
        "Running" in text for _, text in rows(
            driver, 'div[data-workload="default/web"] tr[data-replica]', "data-replica")) == 3,
         120)
    before = wait("2 worker replicas", lambda: (rows := replica_rows(driver, "worker"))
                  and len(rows) == 2 and rows)

    # A scale-up through the CLI shows without a reload: the marker survives.
    driver.execute_script("window.notReloaded = true")
    worker.write_text(WORKER.format(replicas=3))
    cluster.mctl("apply", "-f", str(worker))
    after = wait("a third worker replica", lambda: (rows := replica_rows(driver, "worker"))
                 and len(rows) == 3 and rows)
    assert set(before) < set(after)
    assert driver.execute_script("return window.notReloaded") is True
    new = (set(after) - set(before)).pop()
    wait(f"{new} Running with a node and an IP", lambda: any(
        name == new and text.split("|")[1].startswith("Running")
        and re.fullmatch(r"node\d", text.split("|")[3])
        and re.fullmatch(r"\d+\.\d+\.\d+\.\d+", text.split("|")[5])
        for name, text in rows(driver, "tr[data-replica]", "data-replica")), 120)

    def points(selector: str) -> int:
        return max([int(n or 0) for n, _ in rows(driver, selector, "data-points")] or [0])
    # Samples every 5 s: a line needs two.
    wait("node graphs with points", lambda: points('canvas[data-series^="node:"]') >= 2, 60)
    wait("replica graphs with points", lambda: points('canvas[data-series^="replica:"]') >= 2,
         60)
    events = [text for _, text in rows(driver, "#events tbody tr", "class")]
    assert any(text.split("|")[3] == "Scheduled" for text in events), events
    assert driver.execute_script("return window.notReloaded") is True
    errors = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors

    shot = os.environ.get("MCTL_WEBVIEW_SCREENSHOT")
    if shot:
        time.sleep(20)    # a few more points on the graphs
        driver.save_screenshot(shot)
