"""rbm_tune.tracking.outbox: ordered MLflow writes that wait out an outage, kept on disk.

A real SQLite MLflow store; the outage is a real one (the outbox's tracker pointed at a closed
port on 127.0.0.1), no MLflow call is faked.
"""

from __future__ import annotations

import json
import pickle
import socket
from pathlib import Path

import pytest

from rbm_tune.study.mlflow_callback import final_logged, logged
from rbm_tune.tracking import Tracker
from rbm_tune.tracking.outbox import Outbox


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow  # MLflow's client retries the closed port for ~15 s
def test_an_outage_keeps_every_write_in_order_until_mlflow_answers(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(uri, "s", study_tags={"rbm_tune.study": "s"})
    pending = tmp_path / "study" / "mlflow-pending.json"
    said: list[str] = []
    box = Outbox(tracker, pending, log=said.append, retry_s=0.0)
    box.send("start", "t1", {"student.k": 2}, {"rbm_tune.teacher_key": "abc"}, False, None)
    box.send("rows", "t1", [[{"val_acc": 0.5}, 1]])
    assert not box.pending and not pending.exists()  # MLflow answered: nothing waits

    # what Ray saves with the Tuner: no client, no run ids, no pending writes
    copy = pickle.loads(pickle.dumps(box))
    assert copy._tracker is None and copy.runs == {} and copy.pending == []

    # the server goes away: writes wait, in order, in memory and on disk
    box.tracker_args = (f"http://127.0.0.1:{_closed_port()}", "s", tracker.study_tags)
    box._tracker = None
    box.send("rows", "t1", [[{"val_acc": 0.6}, 2]])
    box.send("tags", "t1", {"rbm_tune.asha_stopped": "false"})
    box.send("end", "t1", "FINISHED")
    assert [op[0] for op in box.pending] == ["rows", "tags", "end"]
    assert json.loads(pending.read_text()) == box.pending
    assert len([s for s in said if "does not answer" in s]) == 1  # said once, not per write

    # a driver that died here: the next one (resume) writes the outbox first, adopting the run
    again = Outbox(tracker, pending, log=said.append, retry_s=0.0)
    assert [op[0] for op in again.pending] == ["rows", "tags", "end"]
    again.runs = dict(box.runs)
    assert again.flush(force=True) and not pending.exists()
    run = tracker.client.get_run(box.runs["t1"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["rbm_tune.asha_stopped"] == "false"
    history = tracker.client.get_metric_history(run.info.run_id, "val_acc")
    assert sorted((m.step, m.value) for m in history) == [(1, 0.5), (2, 0.6)]


def test_what_mlflow_gets_from_an_epoch_and_from_a_finished_trial() -> None:
    epoch = {"epoch": 3, "val_acc": 0.5, "train_loss": 1.0, "held_epochs": (), "node_id": "n"}
    assert logged(epoch) == {"val_acc": 0.5, "train_loss": 1.0}
    final = {
        "val_acc": 0.7,
        "test_acc": 0.6,
        "test_acc_max_over_epochs_oracle": 0.65,
        "best_epoch": 9,
        "num_params": 10,
        "inference_ms_per_1k_nodes": 0.1,
        "ran_on_cuda": 0,
        "epoch": 12,
    }
    out = final_logged(final)
    assert out["final_val_acc"] == 0.7 and "val_acc" not in out and "epoch" not in out
    assert out["test_acc"] == 0.6 and len(out) == 7
