"""Other Redis-backed queues doing the same job: one task per number, each adds it to a key.

Every competitor gets the very numbers the producer generates for the same seed, and its run is
checked the same way: after the queue drains, the key holds the expected sum and exactly one
completion per number (a task run twice would count twice). Their workers are started and warmed
up first; the clock runs from the first enqueue until the last task has counted.
"""
