"""Instructions per batch decision, counted by valgrind's callgrind (benchmarks/README.md,
"Where the time goes"). Timings on a shared machine move by tens of percent between runs;
an instruction count does not, and with the measured time it gives the instructions per
cycle the kernel reaches (how far it is from being bound by latency or by throughput).

    # valgrind cannot run AVX-512 code: compile the kernels for a CPU without it, first
    # natively (a minute), so the run under valgrind loads them from the cache
    export NUMBA_CPU_NAME=haswell NUMBA_CACHE_DIR=/tmp/usher-haswell
    python -c "import usher"
    valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out \\
        --toggle-collect='__pyx_pw_5usher_7_engine_6Engine_*_launch_arrays' \\
        python benchmarks/count_instructions.py a 1
    # instructions inside the batch kernel call (the call, its arguments, the kernel):
    callgrind_annotate /tmp/cg.out | grep "PROGRAM TOTALS"

The steady state alone: run it with 1 and with 2 batches; the difference of the two totals,
divided by 2,000, is what one more steady-state batch costs per decision.

Arguments: mix (a or b, default a), batches of 2,000 rows (default 1). The fleet is the
benchmarks' 1,400-server one in steady state (``fleets.build``); only ``launch_many``'s
kernel call (``Scheduler._launch_arrays``) is collected — including the calls that prefill
the fleet (every decision through that call is a real placement: the script counts them
all and prints the total to divide by). Under valgrind this takes ~15 minutes.
"""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import usher  # noqa: E402
import fleets  # noqa: E402

rows = [0]  # decisions through the kernel call, prefill included
_kernel_call = usher.Scheduler._launch_arrays


def _counted(self, users, *args):
    rows[0] += len(users)
    return _kernel_call(self, users, *args)


usher.Scheduler._launch_arrays = _counted
mix = sys.argv[1] if len(sys.argv) > 1 else "a"
batches = int(sys.argv[2]) if len(sys.argv) > 2 else 1
f = fleets.build(1400, mix)
s, now = f.s, f.now
app_index = {a: i for i, a in enumerate(s.app_names)}
n = 0
for _ in range(batches):
    reqs = f.prepare(2000)
    users = np.array([r[1] for r in reqs], dtype=np.int64)
    apps = np.array([app_index[r[2]] for r in reqs], dtype=np.int64)
    locations = None if mix == "a" else [r[3] for r in reqs]
    out = s.launch_many(users, apps, locations=locations, now=now)
    f.settle(reqs, list(out))
    n += len(reqs)
print(f"mix {mix}, 1,400 servers: {rows[0]:,} decisions through launch_many's kernel call "
      f"({rows[0] - n:,} prefilling the fleet, {n:,} in steady state): divide callgrind's "
      "PROGRAM TOTALS by the first figure")
