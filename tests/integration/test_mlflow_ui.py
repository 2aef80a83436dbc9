"""The MLflow UI in a real browser: after a study, headless Chromium opens the study's compare
page and finds every trial with its searched parameters and the objective.

Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them, best effort) driven by
Selenium; skipped with the reason where either is missing. The server is a real ``mlflow
server`` on 127.0.0.1 and the study a real (tiny) one on the embedded demo graph.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.parse
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from rbm_tune.metrics import BEST_VAL_ACC
from rbm_tune.search_space import load_space
from rbm_tune.study import run_study
from tests.support.processes import free_port, start_mlflow_server, stop_process_group
from tests.support.spaces import write_space

pytestmark = pytest.mark.integration

OBJECTIVE = BEST_VAL_ACC  # the trial's value at its best-validation epoch


def _browser():  # type: ignore[no-untyped-def]
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium (the dev extra)")
    from selenium.webdriver.chrome.service import Service

    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if binary is None or driver is None:
        pytest.skip(
            "no chromium / chromedriver (Debian: apt-get install chromium chromium-driver)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1600,1200", "--no-proxy-server"):  # fmt: skip
        options.add_argument(arg)
    # the chromedriver Debian ships: Selenium Manager would try to download one
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


def _wait_for(browser, texts: list[str], timeout: float = 90) -> str:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    page = ""
    while time.monotonic() < deadline:
        page = browser.find_element("tag name", "body").text
        if all(t in page for t in texts):
            return page
        time.sleep(1)
    missing = [t for t in texts if t not in page]
    raise AssertionError(f"the page never showed {missing}; it showed:\n{page[:3000]}")


@pytest.mark.usefixtures("teacher_in_cache")
def test_the_compare_page_shows_every_trial_with_its_parameters_and_objective(
    workdir: Path,
) -> None:
    browser = _browser()
    proc, uri = start_mlflow_server(workdir, free_port())
    try:
        path = write_space(workdir, "ui", trials=3, epochs=3, concurrent=2)
        run_study(load_space(path), cpus=2, verbose=0, tracking_uri=uri, log=lambda _: None)
        client = MlflowClient(uri)
        exp = client.get_experiment_by_name("ui")
        assert exp is not None
        trials = client.search_runs(
            [exp.experiment_id], filter_string="tags.`rbm_tune.role` = 'trial'"
        )
        assert len(trials) == 3
        ids = [r.info.run_id for r in trials]
        query = urllib.parse.urlencode(
            {"runs": json.dumps(ids), "experiments": json.dumps([exp.experiment_id])}
        )
        browser.get(f"{uri}/#/compare-runs?{query}")
        names = [r.info.run_name for r in trials]
        page = _wait_for(browser, ["student.num_experts", "student.k", OBJECTIVE, *names])
        # each trial's drawn values are on the page (the params table has one column per run)
        for run in trials:
            assert run.data.params["student.num_experts"] in page
            assert OBJECTIVE in run.data.metrics
    finally:
        browser.quit()
        stop_process_group(proc)
