"""Runs one benchmark client and adds its CPU time per push to the rows it prints.

Usage: python3 measure.py <command...>
The command prints markdown rows `| client | in flight | pushes | failed | pushes/s |
p50 ms | p99 ms |`, one per level; run it for one level at a time, so the CPU time the
process used (user + system, warm-up and start-up included) divides by that row's
pushes. The row comes back with one more column: client CPU in microseconds per push.
"""
import resource
import subprocess
import sys

before = resource.getrusage(resource.RUSAGE_CHILDREN)
done = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, text=True)
after = resource.getrusage(resource.RUSAGE_CHILDREN)
cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
rows = [line for line in done.stdout.splitlines() if line.startswith("| ")]
if done.returncode != 0 or len(rows) != 1:
    sys.stderr.write(done.stdout)
    sys.exit(f"{sys.argv[1]}: exit {done.returncode}, {len(rows)} rows (want 1)")
cells = [c.strip() for c in rows[0].strip("|").split("|")]
pushes = int(cells[2])
print(f"{rows[0].rstrip().rstrip('|')}| {cpu / max(pushes, 1) * 1e6:.1f} |")
