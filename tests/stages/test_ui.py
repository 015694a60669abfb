"""The MLflow UI as a person comparing conditions meets it: `python -m stages.ui` opens on the runs."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import mlflow

from protoviz_core.config import parse_params
from protoviz_core.tracking import pipeline_run
from tests.helpers import tiny_params


# Straight to 127.0.0.1: urllib.request.urlopen keeps the proxies of its first call in this process
# (an earlier test points http_proxy at a dead port to stay offline).
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_ui_opens_on_both_conditions_runs_and_their_probe_chart(tmp_path, browser):
    from selenium.webdriver.support.ui import WebDriverWait

    for aug in ("clrjit", "keepclr"):
        with pipeline_run(parse_params({**tiny_params(), "aug": aug}), "probe"):
            for epoch in range(3):
                mlflow.log_metric("probe/logreg", 0.3 + 0.05 * epoch, step=epoch)
    log = tmp_path / "server.log"
    with open(log, "w") as output:  # a file, not a pipe: the server's log must never block it
        server = subprocess.Popen([sys.executable, "-m", "stages.ui", "--port", str(_free_port())],
                                  cwd=os.getcwd(), env=os.environ.copy(), stdout=output, stderr=subprocess.STDOUT,
                                  text=True, start_new_session=True)
    try:
        deadline, error = time.time() + 180, "no address printed"
        while True:
            lines = [line for line in log.read_text().splitlines() if line.startswith("open ")]
            try:
                if lines:
                    url = lines[0].split()[-1]
                    _DIRECT.open(url.split("#")[0], timeout=5)
                    break
            except OSError as exc:
                error = repr(exc)
            assert server.poll() is None and time.time() < deadline, f"mlflow server did not answer ({error}):\n" + \
                log.read_text()[:1500]
            time.sleep(1)
        assert "/runs?workflowType=machine_learning" in url
        browser.get(url)
        wanted = ("clrjit-seed1-workspace", "keepclr-seed1-workspace", "probe/logreg")
        WebDriverWait(browser, 90).until(
            lambda d: all(text in d.find_element("tag name", "body").text for text in wanted))
        assert "workflowType=machine_learning" in browser.current_url  # not the GenAI overview
        assert "Token Usage" not in browser.find_element("tag name", "body").text
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
