"""The record layouts of the engine's state, declared once: pure Python, no
imports, so the build (setup.py) can read it without numba to write the
constants the compiled binding uses (see ``codes.py`` for the codes).

Every table is a tuple of field names; ``SV_*``, ``SE_*`` ... are the index of
each field, ``N_*`` the number of fields, and the header slots ``H_*`` the
tables' addresses followed by the scalars. ``usher.core.state`` re-exports all
of them and holds the kernels' view of the state.
"""

# ---------------------------------------------------------------- field lists
SERVER_INT_FIELDS = (
    "present",  # 1 while the server exists (0 after remove_server)
    "zone",  # zone index
    "pool",  # pool index
    "group",  # group index (pool, zone, tag set), -1 until laid out
    "slot",  # leaf position inside its group's tree
    "tags",  # tag bitmask
    "max_sessions",
    "weight",
    "power",  # codes.Power
    "registered",  # 0/1
    "mode",  # codes.Mode
    "sessions",  # sessions not ended (launching, active, disconnected)
    "pending",  # sessions still counting as pending logons
    "load_index",  # 0..10000, recomputed on every change
    "tb",  # tiebreak: < 0 = seeded initial order, else pick sequence number
    "key",  # selection key, see loadindex.selection_key
    "sinbin",  # 1 while sin-binned
    "key_bits",  # the key's preference bits: SINBIN_BIT while sin-binned | SLOW_BIT while slow | PLACE_LAST_BIT while place-last
    "sb_prev",  # sin-bin list links
    "sb_next",
    "v_head",  # the server's sessions (doubly linked through SE_V_*)
    "v_tail",
    "picks",  # sessions placed on this server since it was added
    "logons",  # logons completed since it was added or last powered off (samples of logon_ewma)
)
SERVER_FLOAT_FIELDS = (
    "cpu",
    "mem",
    "disk_queue",
    "custom",
    "sinbin_until",
    "logon_ewma",  # logon duration (launch -> logon_complete), exponentially weighted; 0 before the first
)

SESSION_INT_FIELDS = (
    "state",  # codes.SessionState (FREE when the slot is unused)
    "gen",  # generation of the slot; session id = gen << 32 | slot
    "user",
    "server",
    "pool",
    "endpoint",  # endpoint index, -1 = none
    "u_prev",  # the user's sessions, in creation order
    "u_next",
    "v_prev",  # the server's sessions
    "v_next",
    "p_prev",  # pending-logon list, ordered by launch time
    "p_next",
    "pending",  # 1 while counting as a pending logon
    "inst_head",  # first app instance of the session
    "n_apps",
)
SESSION_FLOAT_FIELDS = ("t_launch", "t_state")

INSTANCE_FIELDS = ("app", "next")

USER_FIELDS = ("home_zone", "n_sessions", "s_head", "s_tail")

APP_FIELDS = (
    "home_zone",
    "tags",  # tag restriction mask (0 = none)
    "max_total",  # -1 = unlimited
    "max_per_user",  # -1 = unlimited
    "instances",  # sessions running the app
    "pools_start",  # into the app_pools array
    "pools_count",
)

POOL_INT_FIELDS = (
    "load_balancing",
    "failover",
    "reconnection",
    "reconnect_in_maintenance",
    "external",
    "tolerance",
    "tolerance_hard",
    "max_per_user",  # -1 = unlimited
    "rules",  # bitmask over codes.LoadRule
    "n_zpref",
    "zpref0",
    "zpref1",
    "zpref2",
    "g_start",  # groups of the pool: [g_start, g_start + g_count)
    "g_count",
    "slow_min",  # logons a server needs before it can be judged slow (slow_min_samples)
    "slow_wait",  # logons of the pool left before its logon median is computed again
)
POOL_FLOAT_FIELDS = (
    "cpu_full",
    "memory_full",
    "disk_queue_full",
    "slow_factor",  # slow_logon_factor, 0 = the slow rule is off
    "logon_median",  # the pool's median logon_ewma when last computed, -1 = none yet
)

GROUP_FIELDS = (
    "pool",
    "zone",
    "tags",
    "n_servers",
    "n_available",  # servers available (eligibility.available): counted by build_trees, kept by server_op
    "tree_off",  # the group's first block (row) in the tree table
    "tree_cap",  # leaves (a power of eight); node 1 is the root (see tree.py)
)

PZ_FIELDS = ("g_start", "g_count")  # per (pool, zone): groups of that pool in that zone

#: Fields of a tree entry. The tree table is (tree_len, 32): one row per *block*,
#: the eight entries of one node's children stored field by field — their eight
#: keys, then their eight tiebreaks, servers and leaf slots, each field one aligned
#: 64-byte line — so a level of the tree is one vector compare (see tree.py).
#: ``slot`` is the entry's server's leaf position in its group (so an entry names
#: its server's whole path without reading the server record).
TREE_FIELDS = ("key", "tb", "server", "slot")
TREE_ARITY = 8  # children per node: entries per block, lanes per field

CLOCK_FIELDS = ("now", "sinbin_seconds", "pending_timeout")

#: What a launch kernel writes for each decision (one int64 row per launch).
DECISION_FIELDS = (
    "outcome",  # codes.Outcome
    "reason",  # codes.Reason (NONE unless rejected)
    "server",  # server index or -1
    "session",  # session id or -1
    "zone",  # zone index of the server or -1
    "load_index",  # the server's load index after the decision, or -1
    "pool",  # pool index of the session or -1
    "zone_choice",  # codes.ZoneChoice for a PLACED decision, else -1
)

# Header: table addresses, then capacities and counters.
TABLES = (
    "server_i",
    "server_f",
    "session_i",
    "session_f",
    "instance",
    "user",
    "app",
    "app_pools",
    "pool_i",
    "pool_f",
    "group",
    "pz",
    "tree",
    "ent",
    "session_free",
    "instance_free",
    "clock",
)
HEADER_SCALARS = (
    "server_cap",
    "session_cap",
    "instance_cap",
    "user_cap",
    "app_cap",
    "pool_cap",
    "group_cap",
    "pz_cap",
    "tree_len",
    "app_pools_len",
    "ent_words",
    "n_servers",  # servers ever added (indices 0 .. n_servers-1)
    "n_zones",
    "session_free_top",
    "instance_free_top",
    "pick_seq",
    "holders",  # users holding a licence
    "licence_cap",  # -1 = unlimited
    "enforce_entitlement",
    "live_sessions",
    "pend_head",
    "pend_tail",
    "sb_head",
    "sb_tail",
    "likely_pick",  # a hint: the server the next placement will most likely take, or -1
)


def _export(prefix: str, names, namespace=globals()):
    """Define ``PREFIX_FIELD`` = the field's index for each name, and ``N_PREFIX``."""
    for i, name in enumerate(names):
        namespace[f"{prefix}_{name.upper()}"] = i
    namespace[f"N_{prefix}"] = len(names)


_export("SV", SERVER_INT_FIELDS)
_export("SF", SERVER_FLOAT_FIELDS)
_export("SE", SESSION_INT_FIELDS)
_export("SEF", SESSION_FLOAT_FIELDS)
_export("IN", INSTANCE_FIELDS)
_export("US", USER_FIELDS)
_export("AP", APP_FIELDS)
_export("PO", POOL_INT_FIELDS)
_export("POF", POOL_FLOAT_FIELDS)
_export("GR", GROUP_FIELDS)
_export("PZ", PZ_FIELDS)
_export("CK", CLOCK_FIELDS)
_export("D", DECISION_FIELDS)
N_TREE_COLUMNS = len(TREE_FIELDS) * TREE_ARITY
# the column of lane 0 of each field: entry ``lane`` of a block is column FIELD + lane
TREE_KEY, TREE_TB, TREE_SERVER, TREE_SLOT = (k * TREE_ARITY for k in range(len(TREE_FIELDS)))
_export("A", TABLES)
_export("H", tuple(f"{t}_addr" for t in TABLES) + HEADER_SCALARS)
HEADER_LEN = N_H  # noqa: F821  (defined by _export)
