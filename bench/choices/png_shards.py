"""Measurement: how much `extract.shard_format: png` saves on a real store's prototypes.

Re-encodes every shard of a prototype store in memory, raw and png, and reports
the bytes of the image fields, the ratio, and the encode and decode time per image.

    python -m bench.choices.png_shards --store out/prototypes
"""

from __future__ import annotations

import argparse
import time

from protoviz_core.prototypes.store import decode_images, encode_images, open_prototypes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", default="out/prototypes")
    args = p.parse_args()
    store = open_prototypes(args.store)
    raw_bytes = png_bytes = count = 0
    encode_seconds = decode_seconds = 0.0
    for _, rows in store.index.groupby("shard", sort=False):
        images = store.images(rows)
        started = time.perf_counter()
        encoded = encode_images(images, "png")
        encode_seconds += time.perf_counter() - started
        started = time.perf_counter()
        decoded = decode_images(encoded)
        decode_seconds += time.perf_counter() - started
        assert (decoded == images).all(), "png is lossless"
        raw_bytes += images.numel()
        png_bytes += encoded["png"].numel() + encoded["png_offsets"].numel() * 8
        count += len(images)
    side = int(images.shape[-1])
    print(f"{args.store}: {count} prototypes at {side} px\n")
    print("| raw image bytes | png image bytes | png / raw | encode per image | decode per image |")
    print("|---|---|---|---|---|")
    print(
        f"| {raw_bytes / 1e6:.2f} MB | {png_bytes / 1e6:.2f} MB | {png_bytes / raw_bytes:.2f}x | "
        f"{encode_seconds / count * 1e3:.2f} ms | {decode_seconds / count * 1e3:.2f} ms |"
    )


if __name__ == "__main__":
    main()
