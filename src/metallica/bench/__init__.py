"""``metallica bench``: the load generator, the non-durable floor, the results and the plot."""
