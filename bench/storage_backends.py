"""Documents through the S3 backend against the local directory, in the same run: upload and download N PDFs
(default 1,000 of 100 KiB) through `portal.storage`, each backend in a fresh process so that its peak memory is
its own, and the same work through the bare client (open/rename for the directory, boto3's put/get for S3) as
the ceiling.

    .venv/bin/python bench/storage_backends.py [--documents 1000] [--kib 100]

The S3 server is `rclone serve s3` on loopback over a temporary directory (the tests' server): it stands for a
real object store only roughly (it writes to this machine's disk, on the same two cores), so the S3 figures
measure our client path and the protocol's round trips, not a provider's throughput.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.support.s3 import s3_server  # noqa: E402


def documents(count: int, size: int) -> list[bytes]:
    header = b"%PDF-1.7\n"
    return [header + os.urandom(size - len(header)) for _ in range(count)]


def run_one(kind: str, url: str, count: int, size: int) -> dict[str, float]:
    """In a fresh process: store `count` documents, then read each back; seconds and peak RSS."""
    import hashlib

    import boto3

    blobs = documents(count, size)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if kind == "portal":
        from portal.storage import open_store

        store = open_store(url)
        started = time.perf_counter()
        keys = []
        for blob in blobs:
            file, path = store.temporary_file()
            with file:
                file.write(blob)
            keys.append(store.store_file(path).sha256)
        stored = time.perf_counter()
        for key in keys:
            for _chunk in store.iter_bytes(key):
                pass
    elif url.startswith("s3://"):
        bucket = url[5:].split("/", 1)[0]
        client = boto3.session.Session().client("s3")
        started = time.perf_counter()
        keys = []
        for blob in blobs:
            key = f"bare/{hashlib.sha256(blob).hexdigest()}"
            client.put_object(Bucket=bucket, Key=key, Body=blob)
            keys.append(key)
        stored = time.perf_counter()
        for key in keys:
            client.get_object(Bucket=bucket, Key=key)["Body"].read()
    else:
        root = Path(url)
        root.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        keys = []
        for blob in blobs:
            key = hashlib.sha256(blob).hexdigest()
            with open(root / f"{key}.part", "wb") as file:
                file.write(blob)
                file.flush()
                os.fsync(file.fileno())
            os.replace(root / f"{key}.part", root / key)
            keys.append(key)
        stored = time.perf_counter()
        for key in keys:
            (root / key).read_bytes()
    done = time.perf_counter()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"upload_s": stored - started, "download_s": done - stored, "peak_rss_growth_mib": (peak - baseline) / 1024}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--documents", type=int, default=1000)
    parser.add_argument("--kib", type=int, default=100)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    size = args.kib * 1024
    if args.child:
        print(json.dumps(run_one(args.child[0], args.child[1], args.documents, size)))
        return

    with tempfile.TemporaryDirectory(prefix="quittance-bench-storage-") as work, \
            s3_server(Path(work) / "s3") as server:
        env = {**os.environ, **server.environment}
        server.bucket("bench")
        runs = [("local", "bare", f"{work}/bare"), ("local", "portal", f"{work}/local"),
                ("s3", "bare", "s3://bench"), ("s3", "portal", "s3://bench/portal")]
        results = {}
        for backend, kind, url in runs:
            out = subprocess.run([sys.executable, __file__, "--documents", str(args.documents), "--kib",
                                  str(args.kib), "--child", kind, url], env=env, check=True, capture_output=True,
                                 text=True).stdout
            results[(backend, kind)] = json.loads(out)

    mib = args.documents * size / 2**20
    print(f"{args.documents} documents of {args.kib} KiB ({mib:.0f} MiB), load average "
          f"{os.getloadavg()[0]:.1f}")
    print(f"{'backend':8} {'path':7} {'upload/s':>9} {'download/s':>11} {'peak RSS +MiB':>14} "
          f"{'up vs bare':>11} {'down vs bare':>13}")
    for (backend, kind), r in results.items():
        bare = results[(backend, "bare")]
        print(f"{backend:8} {kind:7} {args.documents / r['upload_s']:9.0f} {args.documents / r['download_s']:11.0f} "
              f"{r['peak_rss_growth_mib']:14.1f} {bare['upload_s'] / r['upload_s']:10.0%} "
              f"{bare['download_s'] / r['download_s']:12.0%}")


if __name__ == "__main__":
    main()
