"""The reference oracle: a naive Chandy-Lamport replayed over the simulator's schedule.

reference.py  the algorithm from the paper, on JSON schedule steps (imports nothing
              from the project)
compare.py    every difference between a Simulation's documents and the oracle's
"""
