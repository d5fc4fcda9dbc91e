"""What the bench and the lab share: the load they send, what its clients were told, and the
verdict on it.

- :mod:`~metallica.load.closedloop`: C clients, each sending its next command when the last is
  answered; :mod:`~metallica.load.openloop`: commands sent on a schedule whatever the answers
  take, with its arrival times (:mod:`~metallica.load.schedule`), its figures
  (:mod:`~metallica.load.stats`) and its pictures (:mod:`~metallica.load.plot`);
  :mod:`~metallica.load.capacity`: the highest rate a stack sustains, from short open loops.
- :mod:`~metallica.load.records`: what each client was told; :mod:`~metallica.load.checker`:
  the invariant checker, which holds that against the stores.
- :mod:`~metallica.load.pg_cluster`: a throwaway PostgreSQL cluster to run a stack on.

``metallica.bench`` and ``metallica.lab`` both import this package and never each other; it
imports neither of them, nor the CLI (``tests/unit/test_layering.py``).
"""
