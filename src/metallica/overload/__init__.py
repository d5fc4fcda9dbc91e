"""Overload protection, pure: adaptive concurrency limits, circuit breakers, retry budgets and
per-client rates. The services wire them in; nothing here does I/O."""
