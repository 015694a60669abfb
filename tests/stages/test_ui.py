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
    server = subprocess.Popen([sys.executable, "-m", "stages.ui", "--port", str(_free_port())],
                              cwd=os.getcwd(), env=os.environ.copy(), stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        url = server.stdout.readline().split()[-1]
        assert "/runs?workflowType=machine_learning" in url
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(url.split("#")[0], timeout=5)
                break
            except OSError:
                assert server.poll() is None and time.time() < deadline, "mlflow server did not start"
                time.sleep(1)
        browser.get(url)
        wanted = ("clrjit-seed1-workspace", "keepclr-seed1-workspace", "probe/logreg")
        WebDriverWait(browser, 90).until(
            lambda d: all(text in d.find_element("tag name", "body").text for text in wanted))
        assert "workflowType=machine_learning" in browser.current_url  # not the GenAI overview
        assert "Token Usage" not in browser.find_element("tag name", "body").text
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
