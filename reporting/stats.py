"""Small statistics for the insights, with no dependency beyond :mod:`math`.

The two-proportion z-test answers "is variant A's open rate really higher than B's, or is the
difference what chance alone would often produce?" It uses the pooled proportion under the
null hypothesis, as in any statistics textbook; the normal approximation is fair when each
group has at least a handful of successes and failures, which the callers require.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def normal_cdf(x: float) -> float:
    """P(Z <= x) for a standard normal Z, through the error function."""
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


@dataclass(frozen=True)
class ZTest:
    rate_a: float
    rate_b: float
    z: float
    p_value: float  # two-sided

    def significant(self, alpha: float = 0.05) -> bool:
        return self.p_value < alpha


def two_proportion_z(successes_a: int, n_a: int, successes_b: int, n_b: int) -> ZTest:
    """Two-sided two-proportion z-test of ``successes_a / n_a`` against ``successes_b / n_b``."""
    if n_a <= 0 or n_b <= 0:
        raise ValueError("both groups need at least one trial")
    p_a, p_b = successes_a / n_a, successes_b / n_b
    pooled = (successes_a + successes_b) / (n_a + n_b)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    if se == 0:
        # Both all-success or all-failure: no evidence of any difference.
        return ZTest(p_a, p_b, 0.0, 1.0)
    z = (p_a - p_b) / se
    return ZTest(p_a, p_b, z, 2 * (1 - normal_cdf(abs(z))))


def enough_for_test(successes: int, n: int, minimum: int = 5) -> bool:
    """The usual rule of thumb for the normal approximation: ≥ 5 successes and ≥ 5 failures."""
    return successes >= minimum and n - successes >= minimum
