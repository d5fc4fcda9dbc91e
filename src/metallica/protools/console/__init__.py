"""The web console protools serves under ``/console``: every workflow, its timeline across the
services, the live log and the subscription groups, and the health of the replica, for the
people who run Metallica. Server-rendered pages (:mod:`.routes`), a session opened with a log
reader's token (:mod:`.session`), the timeline drawn from the events alone (:mod:`.timeline`)."""
