"""Prints the side-by-side table of bench/relay-compare/run.sh from its JSON reports.

Usage: python3 summarize.py <dir with {ours,other}-<round>.json> <ours label> <other label>
"""
import json
import pathlib
import sys

work = pathlib.Path(sys.argv[1])
labels = {"ours": sys.argv[2], "other": sys.argv[3]}
print("| relay | round | phase | accepted/s | refused | lost | p99 webhook -> push ms "
      "| relay CPU µs/webhook | Postgres CPU µs/webhook | together | peak RSS MiB | idle RSS MiB |")
print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for path in sorted(work.glob("*.json"), key=lambda p: (p.stem.split("-")[1], p.stem)):
    relay, round_ = path.stem.split("-")
    report = json.loads(path.read_text())
    for phase in report["phases"]:
        accepted = max(phase["accepted"], 1)
        relay_us = phase["cpu_seconds"] / accepted * 1e6
        pg_us = phase["postgres_cpu_seconds"] / accepted * 1e6
        refused = sum(phase["refused"].values()) if isinstance(phase["refused"], dict) else phase["refused"]
        refused_share = refused / max(phase["sent"], 1) * 100
        print(f"| {labels[relay]} | {round_} | {phase['name']} | {phase['webhooks_per_s']:,.0f} "
              f"| {refused_share:.1f} % | {phase['lost']} | {phase['latency_p99_ms']:.2f} "
              f"| {relay_us:.0f} | {pg_us:.0f} | {relay_us + pg_us:.0f} "
              f"| {phase['peak_rss_mib']:.1f} | {report['idle_rss_mib']:.1f} |")
