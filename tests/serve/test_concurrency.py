"""Many clients at once: every job is done, in the order the queue took them, no two files share
a number, and the server's memory stays flat over a bounded soak (its RSS is reported)."""

from __future__ import annotations

import re
import threading
import time

import pytest
import webuiapi
from PIL import Image

CLIENTS, JOBS = 8, 3
SOAK_SECONDS = 45
RSS_GROWTH_MIB = 64  # allocator slack; a leak of one 64x64 job's tensors per job would pass this in ~100 jobs


def run_clients(port: int, seed_of, save: bool) -> dict:
    """CLIENTS threads, each its own webuiapi client sending JOBS txt2img one after another."""
    results, errors = {}, []

    def client(c: int) -> None:
        api = webuiapi.WebUIApi(port=port)
        for j in range(JOBS):
            try:
                results[seed_of(c, j)] = api.txt2img(prompt=f"client {c} job {j}", width=64, height=64, steps=4,
                                                     seed=seed_of(c, j), save_images=save, sampler_name="Euler")
            except Exception as error:  # noqa: BLE001 - reported below with the others
                errors.append((c, j, error))

    threads = [threading.Thread(target=client, args=(c,)) for c in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert not errors, errors
    return results


@pytest.mark.slow
def test_eight_clients_three_jobs_each_all_done_in_queue_order_and_memory_flat(server, capsys):
    samples = server.log.parent / "out" / "samples"
    samples.mkdir(parents=True, exist_ok=True)
    before = set(samples.iterdir())
    results = run_clients(server.port, lambda c, j: 50_000 + 10 * c + j, save=True)
    assert len(results) == CLIENTS * JOBS and all(len(r.images) == 1 for r in results.values())

    new = sorted(set(samples.iterdir()) - before)
    assert len(new) == CLIENTS * JOBS and len({p.name for p in new}) == len(new)
    numbers = [int(p.stem) for p in new]
    assert numbers == list(range(numbers[0], numbers[0] + len(new)))  # consecutive: none lost, none shared
    seeds_by_file = [int(re.search(r"Seed: (\d+),", Image.open(p).info["parameters"]).group(1)) for p in new]
    assert sorted(seeds_by_file) == sorted(results)
    # The queue's order, from the server's log: job numbers are given as jobs are queued, and the
    # worker takes them in that order; the files were numbered in the same order.
    started = {int(seed): int(number) for number, seed in
               re.findall(r"job (\d+): scripts_txt2img \(1 image\(s\) 64x64, seeds (\d+)\.\.", server.log.read_text())
               if int(seed) in results}
    assert sorted(started, key=started.get) == seeds_by_file
    for c in range(CLIENTS):  # each client's jobs in the order it sent them
        assert [started[50_000 + 10 * c + j] for j in range(JOBS)] == sorted(started[50_000 + 10 * c + j]
                                                                           for j in range(JOBS))

    start_rss, rounds, deadline = server.rss_mib(), 0, time.monotonic() + SOAK_SECONDS
    while time.monotonic() < deadline:
        run_clients(server.port, lambda c, j: 60_000 + 100 * rounds + 10 * c + j, save=False)
        rounds += 1
    end_rss = server.rss_mib()
    with capsys.disabled():
        print(f"\nserver RSS: {start_rss:.0f} MiB after the first {CLIENTS * JOBS} jobs, {end_rss:.0f} MiB after "
              f"{rounds * CLIENTS * JOBS} more ({SOAK_SECONDS} s)")
    assert end_rss - start_rss < RSS_GROWTH_MIB
