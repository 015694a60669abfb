"""The MLflow UI as a person comparing conditions meets it: `python -m stages.ui` opens on the runs."""

import os
import signal
import subprocess
import sys
import time

import mlflow

from protoviz_core.pipeline.config import parse_params
from protoviz_core.pipeline.run_identity import run_name
from protoviz_core.pipeline.tracking import pipeline_run
from tests.helpers import free_port, tiny_params, wait_until_answering


def test_the_ui_opens_on_both_conditions_runs_and_their_probe_chart(tmp_path, browser):
    from selenium.webdriver.support.ui import WebDriverWait

    conditions = [parse_params({**tiny_params(), "aug": aug}) for aug in ("clrjit", "keepclr")]
    for params in conditions:
        with pipeline_run(params, "probe"):
            for epoch in range(3):
                mlflow.log_metric("probe/logreg", 0.3 + 0.05 * epoch, step=epoch)
    log = tmp_path / "server.log"
    with open(log, "w") as output:  # a file, not a pipe: the server's log must never block it
        server = subprocess.Popen(
            [sys.executable, "-m", "stages.ui", "--port", str(free_port())],
            cwd=os.getcwd(),
            env=os.environ.copy(),
            stdout=output,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
    try:
        deadline = time.time() + 60
        while not (lines := [line for line in log.read_text().splitlines() if line.startswith("open ")]):
            assert server.poll() is None and time.time() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        url = lines[0].split()[-1]
        wait_until_answering(url.split("#")[0], server, 180, lambda: log.read_text()[:1500])
        assert "/runs?workflowType=machine_learning" in url
        browser.get(url)
        wanted = (*(run_name(params) for params in conditions), "probe/logreg")
        WebDriverWait(browser, 90).until(
            lambda d: all(text in d.find_element("tag name", "body").text for text in wanted)
        )
        assert "workflowType=machine_learning" in browser.current_url  # not the GenAI overview
        assert "Token Usage" not in browser.find_element("tag name", "body").text
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
