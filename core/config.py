"""Tunables and defaults, in one place.

Everything a deployment might want to change lives here; the engine reads these
values when a scheduler is created (they are not frozen into compiled kernels).
"""

#: Defaults of a server (Citrix: 250 sessions; weight 100 = standard share).
DEFAULT_MAX_SESSIONS = 250
DEFAULT_WEIGHT = 100
MIN_WEIGHT = 1
MAX_WEIGHT = 10_000

#: Seconds a server whose launch failed is skipped ("sin-bin").
DEFAULT_SINBIN_SECONDS = 60.0
#: Seconds after which a session still launching stops counting as a pending logon.
DEFAULT_PENDING_TIMEOUT = 120.0

#: Pool defaults (Citrix load management policy defaults).
DEFAULT_LOGON_TOLERANCE = 2
DEFAULT_CPU_FULL = 90.0  # percent at which cpu reports full load
DEFAULT_MEMORY_FULL = 90.0  # percent at which memory reports full load
DEFAULT_DISK_QUEUE_FULL = 8.0  # disk queue length that reports 75 % load
DEFAULT_ZONE_PREFERENCE = ("app_home", "user_home", "user_location")
DEFAULT_LOAD_RULES = ("sessions",)

#: Load index scale: 10000 = full.
FULL_LOAD = 10_000
#: The disk-queue rule reports this sub-index at its configured queue length.
DISK_QUEUE_INDEX_AT_FULL = 7_500.0

#: Horizontal score = load_index * SCORE_SCALE // weight (integer, see loadindex.py).
SCORE_SCALE = 1_000_000

#: Distinct tags the engine can hold (one bit each in a 64-bit mask).
MAX_TAGS = 64

#: Initial capacities of the growable tables (they double when full).
INITIAL_SERVERS = 64
INITIAL_SESSIONS = 1024
INITIAL_USERS = 256
INITIAL_APPS = 16
INITIAL_POOLS = 8

#: How many candidates an explanation lists.
EXPLAIN_TOP = 5

#: Slow servers (docs/SEMANTICS.md): the weight of a new logon duration in a
#: server's logon EWMA, the samples a server needs before it can be judged slow
#: (the pool default of ``slow_min_samples``), and how often a pool's logon
#: median is computed again (every ``n // SLOW_MEDIAN_EVERY + 1`` logons of a
#: pool whose median counts n servers; see core/health.py).
SLOW_EWMA_ALPHA = 0.3
DEFAULT_SLOW_MIN_SAMPLES = 5
SLOW_MEDIAN_EVERY = 16
