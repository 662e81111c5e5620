"""Instructions per batch decision, counted by valgrind's callgrind (benchmarks/README.md,
"The two unmet targets"). Timings on a shared machine move by tens of percent between runs;
an instruction count does not, and with the measured time it gives the instructions per
cycle the kernel reaches (how far it is from being bound by latency or by throughput).

    # valgrind cannot run AVX-512 code: compile the kernels for a CPU without it, first
    # natively (a minute), so the run under valgrind loads them from the cache. The CPU
    # features are named too: numba keys its cache on them, and under valgrind the host
    # reports fewer, so without them the kernels compile again under valgrind (~25 min).
    export NUMBA_CPU_NAME=haswell NUMBA_CACHE_DIR=/tmp/usher-haswell
    export NUMBA_CPU_FEATURES=+64bit,+avx,+avx2,+bmi,+bmi2,+cmov,+cx16,+f16c,+fma,+fxsr,+lzcnt,+mmx,+movbe,+popcnt,+sse,+sse2,+sse3,+sse4.1,+sse4.2,+ssse3,+xsave
    python -c "import usher"
    valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out \\
        --toggle-collect='__pyx_pw_5usher_7_engine_6Engine_*_launch_compiled' \\
        --toggle-collect='__pyx_pw_5usher_7_engine_6Engine_*_launch_arrays' \\
        python benchmarks/tools/count_instructions.py a 2 --steady
    # instructions inside the batch kernel call (the call, its arguments, the kernel):
    callgrind_annotate /tmp/cg.out | grep "PROGRAM TOTALS"

Arguments: mix (a or b, default a), batches of 2,000 rows (default 1), ``--servers N``
(default 1,400), ``--single``: each batch is 2,000 single ``launch`` calls by user id
instead, to collect as the whole public call (argument checks, key table, kernel, decision
object) with ``--toggle-collect='__pyx_pw_5usher_7_engine_6Engine_*launch'`` in place of the
two options above. The same operation counted at 1,400 and 10,000 servers separates the
work a decision does from the time its cache misses cost (the growth target). The fleet is the benchmarks' one of that size in steady state
(``fleets.build``; 100,000 servers take too long to build under valgrind); only ``launch_many``'s
compiled call is collected — ``Scheduler._launch_compiled`` for the steady-state batches
(index arrays, mix b's location names, one time: the index checks, the location lookups,
the fill columns and the kernel), ``Scheduler._launch_arrays`` for the prefill (user ids:
the general path's kernel call) — including the calls that prefill
the fleet, unless ``--steady``: then the script zeroes callgrind's counters
(``callgrind_control -z``) before its last batch, and the total is that batch's alone
(divide by 2,000). Without ``--steady`` every decision through that call is a real
placement: the script counts them all and prints the total to divide by.

``--dump DIR`` (with ``--steady``; add ``--dump-instr=yes --compress-pos=no
--compress-strings=no`` to valgrind's options) also writes the process's anonymous
executable mappings, where numba's code lies, to DIR, for
``benchmarks/tools/annotate_instructions.py``: the kernel's disassembly with each instruction's
count.
"""

import ctypes
import os
import subprocess
import sys

import numpy as np

# fleets.py lives one folder up, with the benchmarks
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import usher  # noqa: E402
import fleets  # noqa: E402

rows = [0]  # decisions through the compiled calls, prefill included


def _counted(call):
    def counted(self, users, *args):
        out = call(self, users, *args)
        if out is not None or call is _general_call:  # None: _launch_compiled declined
            rows[0] += len(users)
        return out

    return counted


_general_call = usher.Scheduler._launch_arrays


def dump_code(folder: str) -> int:
    """Write every anonymous executable mapping of this process (numba's code among them)
    to ``folder``: ``code<k>.bin`` and an index ``maps.txt`` of ``k start end`` (hex)."""
    os.makedirs(folder, exist_ok=True)
    maps = []
    with open("/proc/self/maps") as fh:
        for line in fh:
            parts = line.split()
            if "x" in parts[1] and len(parts) < 6:  # executable, no file behind it
                maps.append(tuple(int(x, 16) for x in parts[0].split("-")))
    with open(os.path.join(folder, "maps.txt"), "w") as index:
        for k, (a, b) in enumerate(maps):
            with open(os.path.join(folder, f"code{k}.bin"), "wb") as out:
                out.write(ctypes.string_at(a, b - a))
            index.write(f"{k} {a:x} {b:x}\n")
    return len(maps)


if __name__ == "__main__":
    args = sys.argv[1:]
    steady = "--steady" in args
    dump = None
    if "--dump" in args:
        k = args.index("--dump")
        dump = args[k + 1]
        del args[k:k + 2]
    servers = 1400
    if "--servers" in args:
        k = args.index("--servers")
        servers = int(args[k + 1])
        del args[k:k + 2]
    single = "--single" in args
    args = [a for a in args if a not in ("--steady", "--single")]
    usher.Scheduler._launch_arrays = _counted(usher.Scheduler._launch_arrays)
    usher.Scheduler._launch_compiled = _counted(usher.Scheduler._launch_compiled)
    mix = args[0] if args else "a"
    batches = int(args[1]) if len(args) > 1 else 1
    f = fleets.build(servers, mix)
    s, now = f.s, f.now
    app_index = {a: i for i, a in enumerate(s.app_names)}
    n = 0
    for b in range(batches):
        reqs = f.prepare(2000)
        if not single:
            users = np.array([r[1] for r in reqs], dtype=np.int64)
            apps = np.array([app_index[r[2]] for r in reqs], dtype=np.int64)
            locations = None if mix == "a" else [r[3] for r in reqs]
        if steady and b == batches - 1 and "vgpreload" in os.environ.get("LD_PRELOAD", ""):
            # under valgrind: the counters restart here, the total is this batch's
            subprocess.run(["callgrind_control", "-z", str(os.getpid())], capture_output=True, check=True)
        if single:
            launch = s.launch
            out = [launch(uid, app, loc, None, False, now) for uid, _u, app, loc in reqs]
        else:
            out = s.launch_many(users, apps, locations=locations, now=now)
        f.settle(reqs, list(out))
        n += len(reqs)
    if steady:
        what = "rounds of 2,000 single launches" if single else "batches"
        print(f"mix {mix}, {servers:,} servers: counters zeroed before the last of {batches} {what}: "
              "divide callgrind's PROGRAM TOTALS by 2,000")
    elif single:
        print(f"mix {mix}, {servers:,} servers: {n:,} single launches in steady state: divide "
              "callgrind's PROGRAM TOTALS by that")
    else:
        print(f"mix {mix}, {servers:,} servers: {rows[0]:,} decisions through launch_many's compiled calls "
              f"({rows[0] - n:,} prefilling the fleet, {n:,} in steady state): divide callgrind's "
              "PROGRAM TOTALS by the first figure")
    if dump:
        print(f"{dump_code(dump)} executable mappings written to {dump}")
