"""Round checkpoints: commit order, reload, interrupted rounds and settings mismatches."""
from __future__ import annotations

import pytest

from synth.checkpoint import CheckpointMismatch, RoundCheckpoint


def test_commit_and_resume(tmp_path):
    ck = RoundCheckpoint(tmp_path / "ck", {"num": 3})
    ck.commit(0, {"accepted": [{"id": "a"}], "rejected": []}, {"counts": {}})
    ck.commit(1, {"accepted": [{"id": "b"}, {"id": "c"}], "rejected": [{"id": "x"}]}, {"counts": {}})
    with pytest.raises(RuntimeError, match="out of order"):
        ck.commit(5, {"accepted": []}, {})
    # An interrupted round 2 left a shard but never reached the manifest: it is ignored.
    (tmp_path / "ck" / "accepted-00002.parquet").write_bytes(b"partial")
    again = RoundCheckpoint(tmp_path / "ck", {"num": 3})
    assert again.next_round == 2
    assert [r["id"] for r in again.load("accepted")] == ["a", "b", "c"]
    assert [r["id"] for r in again.load("rejected")] == ["x"]
    again.commit(2, {"accepted": [{"id": "d"}], "rejected": []}, {})
    assert [r["id"] for r in RoundCheckpoint(tmp_path / "ck", {"num": 3}).load("accepted")] == ["a", "b", "c", "d"]


def test_other_settings_refuse_to_resume(tmp_path):
    RoundCheckpoint(tmp_path / "ck", {"num": 3}).commit(0, {"accepted": []}, {})
    with pytest.raises(CheckpointMismatch, match="other settings"):
        RoundCheckpoint(tmp_path / "ck", {"num": 4})
