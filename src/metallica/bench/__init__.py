"""``metallica bench``: runs of the load generators (:mod:`metallica.load`) against a stack or
the non-durable floor, history preloaded into the stores, the results and the plot."""
