"""FFRecord against its baselines, measured in the same run on data built in a temp dir.

1. Random ``FileReader.read_one`` of 16 KiB and 256 KiB samples, with and without the CRC
   check, against a plain ``os.pread`` loop over the same offsets (target: verified reads
   >= 0.9x). Also shown: ``read`` in batches of 64, and ``pread`` + ``zlib.crc32``, what the
   official reader does per sample; and the batched reads again in fresh processes, with glibc's
   default allocator settings and with ``GLIBC_TUNABLES=glibc.malloc.mmap_threshold=4194304``
   (a fixed threshold: a buffer above it is a fresh mapping, faulted in at every batch).
2. ``PackedFolder.read_one`` on a 5,000 x 40 KiB tree against ``open().read()`` of the loose
   files (target >= 1.0x), and ``pack_folder`` against ``tar cf`` of the same tree (target
   >= 1.0x, with pack_folder's fsync; ``tar cf`` + ``sync FILE`` is shown too).
3. A 1.2M-entry pack (1,000 folders x 1,200 files, tiny samples) in the official layout
   (``b"piouhjgbr"`` + a protocol-4 pickle of nested ``OrderedDict``s). Baseline: what the
   official reader does at open, ``pickle.loads`` of those bytes, timed in a fresh process.
   Against it, in fresh processes: ``PackedFolder`` with its saved index (``PACK.idx``, target:
   <= 0.5x the time, <= 0.2x the anonymous memory), without (built in memory: decoding the
   pickle without running it and indexing it costs more than ``pickle.loads``), and the first
   ``ffr ls``/``cat``/``info`` of a pack without index, which builds and writes it
   (``index_if_missing``) so that every later open is the first column's. Then 4 forked
   workers each look up and read 10,000 random paths: their new private (copy-on-write) memory,
   PSS and RSS, from ``/proc/self/smaps_rollup``.
4. A checkpoint save: ``torch.save`` + ``fsync`` of a Mask R-CNN R50-FPN state as detectron2
   builds it (model + SGD momentum) against a raw write + ``fsync`` of as many bytes to the same
   folder (target >= 0.8x).

Every read timing runs on files that were evicted from the page cache after writing and read
back once (``posix_fadvise(DONTNEED)``, then a sequential read): the state a dataset read from
disk is in, the same for the reader and its baseline (a file just written in small writes sits
in small page-cache folios, which makes every read of it slower). So this measures CPU cost per
read, not a disk. Each timing is the fastest of ``--rounds`` rounds whose variant order
alternates, as ``timeit`` advises: on a shared machine the slower rounds measure the neighbours.

``python -m bench.ffrecord [--rounds N] [--quick]``
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import IO

from hfai_runtime.ffrecord import FileReader, FileWriter, PackedFolder, pack_folder, write_index
from hfai_runtime.ffrecord.layout import crc32
from hfai_runtime.ffrecord.metadata import encode
from hfai_runtime.ffrecord.sidecar import index_path

#: The allocator setting under which one buffer per batch made ``read(64)`` 4x slower.
LOW_MMAP_THRESHOLD = "glibc.malloc.mmap_threshold=4194304"


def _best_times(variants: dict[str, Callable[[], None]], rounds: int) -> dict[str, float]:
    """Fastest seconds per call of each variant over ``rounds`` rounds whose variant order
    alternates. The fastest, as ``timeit`` advises: on a shared machine the slower rounds
    measure the neighbours."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            variants[name]()
            times[name].append(time.perf_counter() - start)
    return {name: min(t) for name, t in times.items()}


def _each(read: Callable, args: list) -> None:
    """Call ``read`` on each argument, dropping each result as the baselines do."""
    for a in args:
        read(a)


def _table(title: str, rows: list[tuple[str, str, str, str]]) -> None:
    width = max(44, *(len(row[0]) for row in rows))
    print(f"\n{title}")
    print(f"  {'variant':<{width}} {'per op':>12} {'vs baseline':>12}  target")
    for row in rows:
        print(f"  {row[0]:<{width}} {row[1]:>12} {row[2]:>12}  {row[3]}")


# -- 1. random reads ---------------------------------------------------------------------------

BATCH_BASELINE = "os.pread, 64 kept at a time (batch baseline)"
BATCHED = "read(64 indices), CRC checked"


def _evict_and_reread(path: Path) -> None:
    """Drop ``path`` from the page cache (after an fsync: dirty pages stay) and read it back
    sequentially, as a dataset read from disk once would be cached."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        while os.read(fd, 8 << 20):
            pass
    finally:
        os.close(fd)


def _read_variants(path: Path, size: int) -> tuple[dict[str, Callable[[], None]], int, Callable]:
    """Each way of reading every sample of ``path`` once in random order; the sample count;
    a function that closes what they use."""
    checked, unchecked = FileReader(path), FileReader(path, check_data=False)
    n = checked.n
    order = list(range(n))
    random.Random(size).shuffle(order)
    spans = [(int(checked._starts[i]), size) for i in order]  # the same offsets, for pread
    batches = [order[i : i + 64] for i in range(0, n, 64)]
    fd = os.open(path, os.O_RDONLY)

    def plain_pread():
        for offset, length in spans:
            os.pread(fd, length, offset)

    def pread_batches():
        for b in range(0, n, 64):
            [os.pread(fd, length, offset) for offset, length in spans[b : b + 64]]

    def pread_zlib():
        for offset, length in spans:
            zlib.crc32(os.pread(fd, length, offset))

    def close():
        os.close(fd)
        checked.close()
        unchecked.close()

    return (
        {
            "os.pread loop (baseline)": plain_pread,
            "read_one, CRC checked": lambda: _each(checked.read_one, order),
            "read_one, check_data=False": lambda: _each(unchecked.read_one, order),
            BATCH_BASELINE: pread_batches,
            BATCHED: lambda: _each(checked.read, batches),
            "pread + zlib.crc32 (official reader's work)": pread_zlib,
        },
        n,
        close,
    )


def _timed(variants: dict[str, Callable[[], None]], rounds: int) -> dict[str, float]:
    for f in variants.values():  # warm up: page tables, allocator
        f()
    return _best_times(variants, rounds)


def probe_batches(path: Path, size: int, rounds: int) -> dict[str, float]:
    """The batched variants alone, for a fresh process with its own allocator settings."""
    variants, _, close = _read_variants(path, size)
    times = _timed({k: variants[k] for k in (BATCH_BASELINE, BATCHED)}, rounds)
    close()
    return times


def _batches_in_fresh_processes(path: Path, size: int, rounds: int) -> dict[str, dict]:
    """``probe_batches`` in a fresh interpreter, with glibc's defaults and a fixed threshold."""
    results = {}
    for label, tunables in (
        ("fresh process, glibc defaults", None),
        (f"fresh process, {LOW_MMAP_THRESHOLD}", LOW_MMAP_THRESHOLD),
    ):
        env = dict(os.environ)
        env.pop("GLIBC_TUNABLES", None)
        if tunables:
            env["GLIBC_TUNABLES"] = tunables
        proc = subprocess.run(
            [sys.executable, "-m", "bench.ffrecord", "--probe-batches", str(path), str(size), str(rounds)],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        results[label] = json.loads(proc.stdout)
    return results


def bench_reads(tmp: Path, rounds: int, total_mib: int) -> None:
    for size in (16 << 10, 256 << 10):
        n = (total_mib << 20) // size
        path = tmp / f"reads-{size >> 10}k.ffr"
        with FileWriter(path, n) as writer:
            for _ in range(n):
                writer.write_one(os.urandom(size))
        _evict_and_reread(path)
        variants, n, close = _read_variants(path, size)
        times = _timed(variants, rounds)
        close()
        base = times["os.pread loop (baseline)"]
        rows = [
            (
                name,
                f"{t / n * 1e6:.2f} us",
                f"{base / t:.2f}x",
                {
                    "read_one, CRC checked": ">= 0.90x",
                    BATCHED: f"vs batch baseline: {times[BATCH_BASELINE] / t:.2f}x",
                }.get(name, ""),
            )
            for name, t in times.items()
        ]
        for label, probe in _batches_in_fresh_processes(path, size, rounds).items():
            t, batch_base = probe[BATCHED], probe[BATCH_BASELINE]
            rows.append(
                (
                    f"read(64), {label}",
                    f"{t / n * 1e6:.2f} us",
                    f"{base / t:.2f}x",
                    f"vs batch baseline there: {batch_base / t:.2f}x",
                )
            )
        _table(
            f"1. random reads of {size >> 10} KiB samples ({n} samples, "
            f"{total_mib} MiB; ratio = baseline time / variant time)",
            rows,
        )
        path.unlink()


# -- 2. packed folder vs loose files, pack_folder vs tar ---------------------------------------


def bench_tree(tmp: Path, rounds: int, files: int) -> None:
    src = tmp / "tree"
    paths = []
    for i in range(files):
        rel = f"class{i % 50:02d}/img_{i:06d}.jpg"
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(os.urandom(40 << 10))
        paths.append(rel)
    random.Random(0).shuffle(paths)
    out, tar = tmp / "tree.ffr", tmp / "tree.tar"

    def run_tar(sync: bool) -> Callable[[], None]:
        def run():
            subprocess.run(["tar", "cf", str(tar), "-C", str(src), "."], check=True)
            if sync:
                subprocess.run(["sync", str(tar)], check=True)

        return run

    pack_times = _best_times(
        {
            "tar cf (baseline)": run_tar(False),
            "tar cf + sync FILE (as durable as ours)": run_tar(True),
            "pack_folder (fsyncs; + its index file)": lambda: pack_folder(src, out),
            "pack_folder(index=False) (fsyncs)": lambda: pack_folder(src, out, index=False),
        },
        rounds,
    )
    base = pack_times["tar cf (baseline)"]
    durable = pack_times["tar cf + sync FILE (as durable as ours)"]
    _table(
        f"2a. packing {files} x 40 KiB files ({files * 40 / 1024:.0f} MiB; ratio = tar time / variant time)",
        [
            (
                name,
                f"{t:.3f} s",
                f"{base / t:.2f}x",
                f">= 1.00x; vs tar+sync: {durable / t:.2f}x" if name.startswith("pack") else "",
            )
            for name, t in pack_times.items()
        ],
    )

    pack_folder(src, out)
    loose = [str(src / p) for p in paths]
    for f in [out, *loose]:
        _evict_and_reread(Path(f))
    folder = PackedFolder(out)

    def read_loose():
        for p in loose:
            with open(p, "rb") as f:
                f.read()

    variants = {
        "open().read() of loose files (baseline)": read_loose,
        "PackedFolder.read_one, CRC checked": lambda: _each(folder.read_one, paths),
        "PackedFolder.read(64 paths), CRC checked": lambda: _each(
            folder.read, [paths[i : i + 64] for i in range(0, files, 64)]
        ),
    }
    for f in variants.values():
        f()
    times = _best_times(variants, rounds)
    base = times["open().read() of loose files (baseline)"]
    _table(
        f"2b. random reads of {files} x 40 KiB files by path",
        [
            (
                name,
                f"{t / files * 1e6:.2f} us",
                f"{base / t:.2f}x",
                ">= 1.00x" if name == "PackedFolder.read_one, CRC checked" else "",
            )
            for name, t in times.items()
        ],
    )
    folder.close()
    shutil.rmtree(src)


# -- 3. a 1.2M-entry index -----------------------------------------------------------------------


def _build_big_pack(path: Path, dirs: int, per_dir: int) -> None:
    """The official layout: ``encode`` is ``b"piouhjgbr" + pickle.dumps(tree, protocol=4)``."""
    tree: OrderedDict = OrderedDict()
    for d in range(dirs):
        tree[f"n{d:08d}"] = OrderedDict((f"n{d:08d}_{f}.JPEG", d * per_dir + f) for f in range(per_dir))
    meta = encode(tree)
    del tree
    sample = b"x" * 8
    with FileWriter(path, dirs * per_dir + 1) as writer:
        for _ in range(dirs * per_dir):
            writer.write_one(sample)
        writer.write_one(meta)
    _evict_and_reread(path)


# The measuring script runs in a fresh interpreter per variant, so that one variant's freed
# memory cannot hide in the other's figures.
_PROBE = r'''
import json, os, pickle, random, struct, sys, time
from pathlib import PurePath

def memory():
    """From /proc/self/smaps_rollup, in MiB: resident, proportional (shared pages divided
    among their users), anonymous, and private dirty (copied on write or allocated here)."""
    fields = {}
    for line in open("/proc/self/smaps_rollup").read().splitlines()[1:]:
        key, value = line.split(":")
        fields[key] = int(value.split()[0]) / 1024
    return {"rss": fields["Rss"], "pss": fields["Pss"], "anon": fields["Anonymous"],
            "private": fields["Private_Dirty"]}

path, how, dirs, per_dir = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
workers = int(sys.argv[5])
from hfai_runtime.ffrecord import FileReader, PackedFolder, index_if_missing
if how == "pickle.loads":  # the official reader's open: the metadata sample, unpickled
    with open(path, "rb") as f:
        n = struct.unpack("<q", f.read(12)[4:])[0]
        f.seek(12 + 4 * n + 8 * (n - 1))
        f.seek(struct.unpack("<q", f.read(8))[0])
        meta = f.read()
before = memory()
start = time.perf_counter()
if how == "pickle.loads":
    tree = pickle.loads(meta[9:])
else:
    if how == "first ffr open":  # what ffr ls/cat/info do with a pack that has no index
        assert index_if_missing(path)
    folder = PackedFolder(path)
open_s = time.perf_counter() - start
after = memory()
if how == "pickle.loads":  # lookups as the official reader does them: nested dicts, by parts
    del meta
    reader = FileReader(path)
    def read_one(p):
        node = tree
        for part in PurePath(p).parts:
            node = node[part]
        return reader.read_one(node)
else:
    read_one = folder.read_one
result = {"open_s": open_s, **{k: after[k] - before[k] for k in after}, "workers": []}
for w in range(workers):
    r, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:
        rng = random.Random(w)
        paths = []
        for _ in range(10000):
            d = rng.randrange(dirs)
            paths.append(f"n{d:08d}/n{d:08d}_{rng.randrange(per_dir)}.JPEG")
        start_mem = memory()
        t = time.perf_counter()
        for p in paths:
            read_one(p)
        dt = time.perf_counter() - t
        end_mem = memory()
        os.write(wfd, json.dumps({"us_per_read": dt / len(paths) * 1e6, "pss": end_mem["pss"],
                                  **{k + "_growth": end_mem[k] - start_mem[k]
                                     for k in ("rss", "private")}}).encode())
        os._exit(0)
    os.close(wfd)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.waitpid(pid, 0)
    result["workers"].append(json.loads(data))
print(json.dumps(result))
'''


def _probes(path: Path, hows: tuple[str, ...], dirs: int, per_dir: int, rounds: int) -> dict[str, dict]:
    """Each variant's figures from fresh processes: memory and 4 workers from the first,
    the open time the fastest of ``rounds`` (variants alternating)."""
    results: dict[str, dict] = {}
    for r in range(rounds):
        for how in hows if r % 2 == 0 else hows[::-1]:
            proc = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    _PROBE,
                    str(path),
                    how,
                    str(dirs),
                    str(per_dir),
                    str(4 if r == 0 else 0),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            result = json.loads(proc.stdout)
            if how in results:
                results[how]["open_s"] = min(results[how]["open_s"], result["open_s"])
            else:
                results[how] = result
    return results


def _first_opens(path: Path, dirs: int, per_dir: int, rounds: int) -> dict:
    """The first ``ffr`` open of ``path`` without its index, each in a fresh process after
    removing the index the previous one wrote; the fastest."""
    best: dict = {}
    for _ in range(rounds):
        Path(index_path(path)).unlink(missing_ok=True)
        result = _probes(path, ("first ffr open",), dirs, per_dir, 1)["first ffr open"]
        if not best or result["open_s"] < best["open_s"]:
            best = result
    return best


def bench_index(tmp: Path, dirs: int, per_dir: int, rounds: int) -> None:
    path = tmp / "big.ffr"
    start = time.perf_counter()
    _build_big_pack(path, dirs, per_dir)
    build_s = time.perf_counter() - start
    results = _probes(path, ("no index file",), dirs, per_dir, min(rounds, 2))
    results["first ffr open"] = _first_opens(path, dirs, per_dir, min(rounds, 2))
    Path(index_path(path)).unlink()
    start = time.perf_counter()
    write_index(path)
    index_s = time.perf_counter() - start
    _evict_and_reread(Path(index_path(path)))
    results.update(_probes(path, ("pickle.loads", "PackedFolder"), dirs, per_dir, rounds))
    base, ours, built = results["pickle.loads"], results["PackedFolder"], results["no index file"]
    first = results["first ffr open"]
    print(
        f"\n3. a {dirs * per_dir:,}-entry pack ({dirs} folders x {per_dir} files, official "
        f"layout, {path.stat().st_size / 2**20:.0f} MiB, built in {build_s:.1f} s; its index "
        f"file {Path(index_path(path)).stat().st_size / 2**20:.0f} MiB, written by "
        f"'ffr index' in {index_s:.1f} s)"
    )
    print(
        f"  {'':<36} {'pickle.loads':>12} {'PackedFolder':>13} {'ours/base':>10} "
        f"{'no idx file':>12} {'/base':>6} {'1st ffr open':>12} {'/base':>6}  target"
    )
    rows = [
        (f"open, fresh process (s, best of {rounds})", "open_s", "<= 0.50"),
        ("memory after open: RSS (MiB)", "rss", ""),
        ("  of which anonymous (MiB)", "anon", "<= 0.20"),
    ]
    for label, key, target in rows:
        a, b, c, d = base[key], ours[key], built[key], first[key]
        print(
            f"  {label:<36} {a:>12.3f} {b:>13.3f} {b / a:>10.2f} {c:>12.3f} {c / a:>6.2f} "
            f"{d:>12.3f} {d / a:>6.2f}  {target}"
        )
    print("  each of 4 forked workers, after reading 10,000 random paths (worst worker):")
    for key, label, target in (
        ("private_growth", "new private (copy-on-write) MiB", "~0"),
        ("pss", "PSS (MiB)", ""),
        ("rss_growth", "RSS growth (MiB) [1]", ""),
    ):
        a, b, c = (max(w[key] for w in r["workers"]) for r in (base, ours, built))
        print(f"  {'  ' + label:<36} {a:>12.2f} {b:>13.2f} {'':>10} {c:>12.2f} {'':>6}  {target}")
    a, b, c = (statistics.mean(w["us_per_read"] for w in r["workers"]) for r in (base, ours, built))
    print(f"  {'  lookup + read_one (us)':<36} {a:>12.2f} {b:>13.2f} {b / a:>10.2f} {c:>12.2f} {c / a:>6.2f}")
    print(
        "  [1] pickle.loads: pages copied on write as lookups touch reference counts; "
        "PackedFolder: pages\n      of the shared file mappings entering the worker's page "
        "table (page cache, no new memory)"
    )
    path.unlink()


# -- 4. a checkpoint save -----------------------------------------------------------------------


def _mask_rcnn_state() -> dict:
    """What detectron2's Checkpointer saves for Mask R-CNN R50-FPN: the model's state dict and
    SGD's momentum buffers (as after one step), plus the small scheduler and iteration."""
    import torch
    from detectron2 import model_zoo
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    for p in model.parameters():
        p.grad = torch.randn_like(p) if p.requires_grad else None
    optimizer.step()
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": {"last_epoch": 1000},
        "iteration": 1000,
    }


def _durably(path: Path, write: Callable[[IO[bytes]], object]) -> Callable[[], None]:
    """``write`` into a new ``path``, then flush and fsync it."""

    def run():
        with open(path, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())

    return run


def bench_checkpoint(tmp: Path, rounds: int) -> None:
    import torch
    from torch.utils.serialization import config

    state = _mask_rcnn_state()
    saved, raw = tmp / "model_0001000.pth", tmp / "raw.bin"
    save = _durably(saved, lambda f: torch.save(state, f))
    save()
    data = memoryview(bytes(saved.stat().st_size))

    def save_by_name():  # torch's own C++ file writer instead of a Python file object
        torch.save(state, str(saved))
        fd = os.open(saved, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)

    def without_crc(save: Callable[[], None]) -> Callable[[], None]:
        def run():
            config.save.compute_crc32 = False  # the zip records' CRC-32s (torch >= 2.5)
            try:
                save()
            finally:
                config.save.compute_crc32 = True

        return run

    times = _best_times(
        {
            "raw write + fsync, same bytes (baseline)": _durably(raw, lambda f: f.write(data)),
            "torch.save + fsync": save,
            "torch.save(file name) + fsync": save_by_name,
            "torch.save + fsync, compute_crc32=False": without_crc(save),
        },
        rounds,
    )
    base = times["raw write + fsync, same bytes (baseline)"]
    _table(
        f"4. saving a Mask R-CNN R50-FPN checkpoint (model + optimizer, "
        f"{len(data) / 2**20:.0f} MiB; ratio = raw time / variant time)",
        [
            (name, f"{t:.3f} s", f"{base / t:.2f}x", ">= 0.80x" if name == "torch.save + fsync" else "")
            for name, t in times.items()
        ],
    )
    saved.unlink()
    raw.unlink()


def _crc_speeds(rounds: int) -> None:
    """CRC-32 throughput over 64 MiB, the fastest of ``rounds`` rounds (one 16 MiB timing
    varies too much with the neighbours to compare implementations)."""
    data = os.urandom(64 << 20)
    times = _best_times(
        {"zlib.crc32": lambda: zlib.crc32(data), "isal crc32 (used)": lambda: crc32(data)}, rounds
    )
    print(
        f"CRC-32 over {len(data) >> 20} MiB, best of {rounds}: "
        + ", ".join(f"{k} {len(data) / t / 1e9:.1f} GB/s" for k, t in times.items())
        + f"; isal/zlib {times['zlib.crc32'] / times['isal crc32 (used)']:.1f}x"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ffrecord",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds per variant")
    parser.add_argument(
        "--quick", action="store_true", help="smaller data (a smoke run, not the reported figures)"
    )
    parser.add_argument(
        "--probe-batches", nargs=3, metavar=("FILE", "SIZE", "ROUNDS"), help=argparse.SUPPRESS
    )  # bench_reads' fresh-process rows
    args = parser.parse_args(argv)
    if args.probe_batches:
        path, size, rounds = args.probe_batches
        print(json.dumps(probe_batches(Path(path), int(size), int(rounds))))
        return
    quick = args.quick
    _crc_speeds(args.rounds)
    with tempfile.TemporaryDirectory(prefix="bench-ffrecord-") as tmp:
        bench_reads(Path(tmp), args.rounds, total_mib=16 if quick else 128)
        bench_tree(Path(tmp), args.rounds, files=500 if quick else 5000)
        bench_index(
            Path(tmp), dirs=100 if quick else 1000, per_dir=120 if quick else 1200, rounds=args.rounds
        )
        bench_checkpoint(Path(tmp), args.rounds)


if __name__ == "__main__":
    main()
