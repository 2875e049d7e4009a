"""Run every benchmark in :data:`BENCHMARKS`, one after another."""

import importlib

BENCHMARKS: tuple[str, ...] = ("ffrecord", "dataset", "suspend", "preemption", "containers")

for name in BENCHMARKS:
    print(f"\n=== bench.{name} ===", flush=True)
    importlib.import_module(f"bench.{name}").main()
