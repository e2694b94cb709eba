"""Deriving seeds: one rule, so that every stream of random numbers in a run is a
function of the run's seed and says which stream it is.

`derive(seed, k)` is the seed of stream k: the batch order of epoch k, the noise of
the test figures after epoch k, and (with k = 7919 * rank) the noise of rank r under
torchrun. The large prime keeps the streams of nearby seeds apart (seed 1's epoch 0
is not seed 0's epoch 1000003 unless a run is that long).
"""

from gankit.checks import whole_number

SPREAD = 1_000_003

# The seeds a torch.Generator takes from 0 (manual_seed refuses 2**64 and up): a sample's
# seed (`gankit sample --seed`, the explorer's) is used as it is.
SAMPLE_SEED_MAX = 2**63 - 1
# A run's seed is spread by derive(): seed * SPREAD + k must stay in the generator's range
# for every stream k a run draws (epochs, 7919 * rank, ...), with room to spare.
RUN_SEED_MAX = 2**32 - 1


def derive(seed: int, k: int) -> int:
    return seed * SPREAD + k


def check(seed, top: int = SAMPLE_SEED_MAX, flag: str = "--seed") -> int:
    """`seed` if it is a whole number from 0 to `top`, else the one-line UserError naming the flag."""
    return whole_number(seed, flag, 0, top)
