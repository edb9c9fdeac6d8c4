"""The run manifest on its own (ldm/manifest.py): reserved ranges of numbers, torn lines, errors;
and a world of one process (ldm/distributed.py). The runs themselves: tests/cli/test_torchrun.py."""

from __future__ import annotations

import json
import threading

import pytest

from ldm.distributed import Ranks, device_for_rank, launched
from ldm.manifest import Manifest, last_run


def test_each_run_reserves_its_range_past_the_samples_and_the_other_runs(tmp_path):
    first = Manifest.start(tmp_path, {"images": 4})
    assert (first.base, first.path.name) == (0, "manifest-00000.jsonl")
    second = Manifest.start(tmp_path, {"images": 3})  # no sample of the first is written yet
    assert second.base == 4
    (tmp_path / "samples").mkdir()
    (tmp_path / "samples" / "00011.png").write_bytes(b"")
    assert Manifest.start(tmp_path, {"images": 1}).base == 12
    assert last_run(tmp_path).base == 12
    assert json.loads(first.path.read_text()) == {"job": {"images": 4, "base": 0}}


def test_runs_started_at_once_get_ranges_that_do_not_overlap(tmp_path):
    bases, start = [], threading.Barrier(8)

    def begin() -> None:
        start.wait()
        bases.append(Manifest.start(tmp_path, {"images": 5}).base)

    threads = [threading.Thread(target=begin) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(bases) == [0, 5, 10, 15, 20, 25, 30, 35]


def test_a_torn_last_line_is_left_out_and_cut_off_before_the_next_line(tmp_path):
    manifest = Manifest.start(tmp_path, {"images": 3})
    manifest.append({"index": 0, "file": "samples/00000.png"})
    with manifest.path.open("a") as f:
        f.write('{"index": 1, "fi')
    read = Manifest.read(manifest.path)
    assert list(read.done) == [0] and read.finished is None and read.torn == len('{"index": 1, "fi')
    read.drop_torn_line()
    read.append({"index": 1, "file": "samples/00001.png"})
    read.append({"finished": {"images": 3, "grid": None}})
    again = Manifest.read(manifest.path)
    assert list(again.done) == [0, 1] and again.finished == {"images": 3, "grid": None} and again.torn == 0


def test_a_bad_line_in_the_middle_or_no_job_line_is_an_error_naming_it(tmp_path):
    path = tmp_path / "manifest-00000.jsonl"
    path.write_text('{"job": {"images": 1, "base": 0}}\nnot json\n{"index": 0}\n')
    with pytest.raises(ValueError, match="manifest-00000.jsonl: line 2 is not JSON"):
        Manifest.read(path)
    path.write_text('{"index": 0}\n')
    with pytest.raises(ValueError, match="the first line does not describe a run"):
        Manifest.read(path)


def test_a_world_of_one_counts_and_hands_lines_over_in_order():
    ranks = Ranks()
    assert ranks.is_main and [ranks.take("batch") for _ in range(3)] == [0, 1, 2] and ranks.take("other") == 0
    assert ranks.share(lambda: 7) == 7
    for line in ("a", "b"):
        ranks.publish(line)
    assert ranks.received() == ["a", "b"] and ranks.received() == []


def test_torchruns_environment_is_read_and_checked(monkeypatch):
    import torch

    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert launched() == (2, 4, 0)
    assert device_for_rank(torch.device("cpu")) == torch.device("cpu")
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(ValueError, match="RANK=4 with WORLD_SIZE=4: the rank must be in 0..3"):
        launched()
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(ValueError, match="not whole numbers; start the processes with torchrun"):
        launched()
