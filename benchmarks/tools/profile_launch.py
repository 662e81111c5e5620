"""A steady-state launch loop to profile (benchmarks/README.md, "Profiling aids").

    python benchmarks/tools/profile_launch.py [a|b] [seconds] [single|index|warm|batch] [servers]

    # the Python edge and the kernel, by line (kernel frames show as addresses)
    py-spy record --native -r 2000 -f raw -o launch.txt -- python benchmarks/tools/profile_launch.py b 20
    # inside the numba kernels, by function: compile them in this process (a fresh
    # cache folder) and write a perf map of their code for `perf report`
    NUMBA_CACHE_DIR=$(mktemp -d) USHER_PERF_MAP=1 perf record -e cpu-clock -F 5000 -o k.data -- \\
        python benchmarks/tools/profile_launch.py a 20 batch
    perf report -i k.data --sort sym

Arguments: mix (a or b, default b), seconds (default 20), ``single`` (one ``launch`` per
decision, users named by id, default), ``index`` (one ``launch_by_index`` per decision),
``warm`` (``single`` with the same users every round, as ``test_launch_warm``) or ``batch``
(``launch_many`` on 2,000 rows), fleet size (default 1,400; 100,000 builds in about 10 s).
The timed part is the launch loop or the batch call; the rest is the untimed steady-state
setup. It prints the mean over every decision and the median of the rounds' means (the
benchmarks' statistic; rounds of 500 launches or one batch). Batch mode also prints the time inside the
compiled call alone: ``Scheduler._launch_compiled`` (index arrays, mix b's location names
and one time: the checks of the indices, the location lookups, the fill columns and the
kernel), or ``Scheduler._launch_arrays`` when a batch takes the general path (its kernel
call on checked arrays).

``USHER_DUMP_CODE=DIR`` writes the process's executable code (numba's kernels among it) to
DIR at the end, for ``annotate_instructions.py`` to print the timer samples of a ``perf
record`` instruction by instruction (its docstring has the commands).

``USHER_PERF_MAP=1`` writes ``/tmp/perf-<pid>.map`` (the format perf reads for code it
cannot see in a file): one line per function of the kernels' code libraries. numba only
knows those addresses for code it compiled in this process, so use it with an empty
``NUMBA_CACHE_DIR`` (the first call then takes about a minute to compile).
"""

import os
import statistics
import sys
import time

import numpy as np

# fleets.py lives one folder up, with the benchmarks
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import fleets  # noqa: E402


def write_perf_map() -> int:
    """Write /tmp/perf-<pid>.map for the launch kernels; returns the number of functions."""
    from usher.core import kernels

    found = set()
    for name in ("launch", "launch_many"):
        library = getattr(kernels, name)._library
        for fn in library._final_module.functions:
            if fn.is_declaration:
                continue
            address = library.get_pointer_to_function(fn.name)
            if address:
                found.add((address, fn.name))
    found = sorted(found)
    with open(f"/tmp/perf-{os.getpid()}.map", "w") as out:
        for k, (address, name) in enumerate(found):
            # sizes are not known: each function is taken to run to the next one
            size = found[k + 1][0] - address if k + 1 < len(found) else 4096
            out.write(f"{address:x} {size:x} {name}\n")
    return len(found)


mix = sys.argv[1] if len(sys.argv) > 1 else "b"
seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 20.0
mode = sys.argv[3] if len(sys.argv) > 3 else "single"
servers = int(sys.argv[4]) if len(sys.argv) > 4 else 1400
f = fleets.build(servers, mix)
s, now = f.s, f.now
if os.environ.get("USHER_PERF_MAP") == "1":
    print(f"perf map: {write_perf_map()} functions", file=sys.stderr)
app_index = {a: i for i, a in enumerate(s.app_names)}
k = 2000 if mode == "batch" else 500
n, spent = 0, 0.0
rounds = []  # ns per decision of each round
kernel = [0.0]  # batch mode: time inside the compiled call alone


def timed(call):
    def timed_call(*args):
        t = time.perf_counter()
        out = call(*args)
        kernel[0] += time.perf_counter() - t
        return out

    return timed_call


# the compiled batch path (index arrays, location names, one time) or the general path's kernel call
s._launch_compiled = timed(s._launch_compiled)
s._launch_arrays = timed(s._launch_arrays)
deadline = time.perf_counter() + seconds
while time.perf_counter() < deadline:
    reqs = f.draw(k) if mode == "warm" else f.prepare(k)
    if mode in ("single", "warm"):
        launch = s.launch
        t0 = time.perf_counter()
        out = [launch(uid, app, loc, None, False, now) for uid, _u, app, loc in reqs]
    elif mode == "index":
        launch = s.launch_by_index
        t0 = time.perf_counter()
        out = [launch(u, app, loc, None, False, now) for _uid, u, app, loc in reqs]
    else:
        users = np.array([r[1] for r in reqs], dtype=np.int64)
        apps = np.array([app_index[r[2]] for r in reqs], dtype=np.int64)
        locations = None if mix == "a" else [r[3] for r in reqs]
        t0 = time.perf_counter()
        out = s.launch_many(users, apps, locations=locations, now=now)
    took = time.perf_counter() - t0
    spent += took
    rounds.append(took / k * 1e9)
    out = list(out)
    placed = f.settle(reqs, out)
    if mode == "warm":
        f.recycle(placed)
    n += k
inside = f" ({kernel[0] / n * 1e9:.0f} ns in the compiled call)" if mode == "batch" else ""
if os.environ.get("USHER_DUMP_CODE"):
    from count_instructions import dump_code

    dump_code(os.environ["USHER_DUMP_CODE"])
print(f"{mode} launch, mix {mix}, {servers:,} servers: {spent / n * 1e9:.0f} ns per decision{inside} "
      f"over {n:,}; median of {len(rounds)} rounds {statistics.median(rounds):.0f} ns")
