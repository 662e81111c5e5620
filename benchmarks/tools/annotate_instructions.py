"""The batch kernel's machine code with each instruction's execution count, from a callgrind
run of ``count_instructions.py --steady --dump DIR`` (benchmarks/README.md, "The two unmet
targets"; the valgrind command is in count_instructions.py's docstring, plus
``--dump-instr=yes --compress-pos=no --compress-strings=no``) — or with each instruction's
share of timer samples, from a ``perf record`` of ``profile_launch.py`` run natively with
``USHER_DUMP_CODE=DIR``.

    python benchmarks/tools/annotate_instructions.py /tmp/cg.out DIR > kernel.txt
    # where the cycles go, natively (AVX-512 code and all; no hardware counters needed)
    USHER_DUMP_CODE=/tmp/code perf record -e cpu-clock -F 20000 -o /tmp/k.data -- \
        python benchmarks/tools/profile_launch.py a 20 batch
    python benchmarks/tools/annotate_instructions.py /tmp/k.data /tmp/code > samples.txt

Prints, for each mapping of DIR that holds counted code, the disassembly (``objdump``) of
the range that ran, one instruction a line: its count over the counted batch, its address,
the instruction. Divide by the batch's 2,000 decisions for the cost per decision; sums by
address range give the cost of each part (the commit, a path replay's levels, the checks).
numba's code has no symbols: valgrind files it under ``???``, which is what is read here.

A timer sample names the instruction the core was waiting to retire (or the one after: a
sample skids by about one instruction): samples pile up after a load that missed the
cache, along a chain of dependent instructions, and on the first instruction after a
mispredicted branch (where the right path starts, which waits for the front end).
Sorting the lines by count (``sort -rn``) lists the stalls.
"""

import collections
import os
import re
import subprocess
import sys


def counts(path: str) -> collections.Counter:
    """Instruction address -> Ir, for the code callgrind could not name (numba's)."""
    cost = collections.Counter()
    ob, after_call = None, False
    with open(path) as fh:
        for line in fh:
            if line.startswith("ob="):
                ob = line.strip()[3:]
            elif line.startswith("calls="):
                after_call = True  # the next cost line is the call's inclusive cost
                continue
            m = re.match(r"^(0x[0-9a-f]+)\s+\d+\s+(\d+)", line)  # positions: instr line
            if m:
                if not after_call and ob == "???":
                    cost[int(m.group(1), 16)] += int(m.group(2))
                after_call = False
    return cost


def samples(path: str) -> collections.Counter:
    """Instruction address -> timer samples, from a ``perf record`` data file."""
    out = subprocess.run(["perf", "script", "-i", path, "-F", "ip"],
                         capture_output=True, text=True, check=True).stdout
    return collections.Counter(int(line, 16) for line in out.split())


def main(source: str, folder: str) -> None:
    if source.endswith(".data"):
        cost = samples(source)
        what = "timer samples"
    else:
        cost = counts(source)
        what = "instructions counted"
    with open(os.path.join(folder, "maps.txt")) as index:
        maps = [(int(k), int(a, 16), int(b, 16)) for k, a, b in (line.split() for line in index)]
    inside = sum(c for x, c in cost.items() if any(a <= x < b for _, a, b in maps))
    print(f"# {inside:,} {what} in numba's code")
    for k, a, b in maps:
        ran = [x for x in cost if a <= x < b]
        if not ran:
            continue
        lo, hi = min(ran), max(ran)
        dis = subprocess.run(["objdump", "-D", "-b", "binary", "-m", "i386:x86-64",
                              f"--adjust-vma={a:#x}", os.path.join(folder, f"code{k}.bin")],
                             capture_output=True, text=True, check=True).stdout
        print(f"# mapping {k}: {a:#x}-{b:#x}")
        for line in dis.splitlines():
            m = re.match(r"^\s+([0-9a-f]+):\s+(?:[0-9a-f]{2} )+\s*(.*)$", line)
            if m and lo <= int(m.group(1), 16) <= hi:
                print(f"{cost.get(int(m.group(1), 16), 0):>9} {m.group(1)}: {m.group(2)}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
