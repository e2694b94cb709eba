"""Deriving seeds: one rule, so that every stream of random numbers in a run is a
function of the run's seed and says which stream it is.

`derive(seed, k)` is the seed of stream k: the batch order of epoch k, the noise of
the test figures after epoch k, and (with k = 7919 * rank) the noise of rank r under
torchrun. The large prime keeps the streams of nearby seeds apart (seed 1's epoch 0
is not seed 0's epoch 1000003 unless a run is that long).
"""

SPREAD = 1_000_003


def derive(seed: int, k: int) -> int:
    return seed * SPREAD + k
