"""usher.cluster: several brokers sharing one state in PostgreSQL.

One broker leads — it holds a lease the database grants and appends every applied
operation with its decision (the trace format of ``usher.journal``) to a table, each row
carrying the leader's epoch, with group commit; the others are hot standbys that tail
the table, answer reads and refuse writes (503 ``NotLeader`` naming the leader), and
one of them takes over when the leader dies. See docs/CLUSTER.md.

    broker = usher.cluster.open_broker("postgresql://db/usher", url="http://10.0.0.5:8642",
                                       seed=Scheduler.from_files("fleet.toml", "servers.csv"))
    app = usher.service.app.create_app(broker.journal, role=broker)
    broker.start(loop)                       # lead or follow, on the app's event loop
"""

from usher.cluster.ha import Broker, open_broker
from usher.cluster.replica import ClusterJournal, recover, state_digest
from usher.cluster.store import NotLeader, StoreError

__all__ = ["Broker", "ClusterJournal", "NotLeader", "StoreError", "open_broker", "recover", "state_digest"]
