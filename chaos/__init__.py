"""The chaos run and the soak: real processes, real faults, and an independent check.

``python -m chaos`` runs one producer and several consumer processes over a file of integers
that the harness wrote itself (so it knows the exact count and sum), while a seeded fault
injector SIGKILLs and SIGSTOPs consumers, kill -9's redis-server and cuts one consumer off the
network. A checker samples the conservation law all along. ``python -m chaos.soak`` pushes ten
million items through and watches the processes' memory. See docs/chaos.md.
"""
