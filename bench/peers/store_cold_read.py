"""Measurement: reading one unit across a run from a cold page cache, at two readahead sizes.

One run's store (193,920 prototypes at 96 px, as bench/peers/study_store.py writes it); then
layer4 unit 17 at all 101 epochs and both repeats is read after dropping the page
cache, and again warm, with the disk's readahead as it is and at Linux's default
(128 KB). Every read touches 202 shards, so a large readahead makes each small read
pull megabytes. Needs root (it drops caches and sets the block device's
read_ahead_kb, restoring it after).

    sudo .venv/bin/python -m bench.peers.store_cold_read --workdir /work/cold-read --device vda
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
from pathlib import Path

from bench.peers.study_store import unit_read, write_run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", required=True)
    p.add_argument("--device", default="vda", help="the block device holding --workdir")
    p.add_argument("--epochs", type=int, default=101)
    args = p.parse_args()
    store = Path(args.workdir) / "store"
    shutil.rmtree(args.workdir, ignore_errors=True)
    write_run(store, 0, args.epochs, 96, "raw")
    setting = Path(f"/sys/block/{args.device}/queue/read_ahead_kb")
    original = setting.read_text().strip()
    print(
        f"| read_ahead_kb | open the store, cold | one unit ({args.epochs} epochs x 2 repeats), cold | warm |"
    )
    print("|---|---|---|---|")
    try:
        for readahead in dict.fromkeys([original, "128"]):
            setting.write_text(readahead)
            subprocess.run("sync; echo 3 > /proc/sys/vm/drop_caches", shell=True, check=True)
            open_cold, unit_cold, _ = unit_read(store)
            _, unit_warm, _ = unit_read(store)
            print(f"| {readahead} | {open_cold:.2f} s | {unit_cold:.2f} s | {unit_warm:.2f} s |", flush=True)
    finally:
        setting.write_text(original)
    shutil.rmtree(args.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
