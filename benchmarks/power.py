"""How many gender pairs make a 5-point change in a rate detectable? Prints the tables of
docs/results/audit-power.md.

    python benchmarks/power.py [--delta 0.05] [--alpha 0.05] [--power 0.8] [--tests 40] [--simulate 2000]

A rate such as ``pct_stereotype`` is the mean of a 0/1 outcome per pair. Before and after tuning,
every pair is measured twice, and ``fairtune compare`` tests the change with McNemar's test on the
discordant pairs (pairs whose outcome flipped). Two designs:

- **paired (McNemar)**: with discordance rate psi = P(outcome flips, either way) and change
  delta = P(0 -> 1) - P(1 -> 0), the pairs needed for a two-sided level-alpha test with power
  1 - beta are (Connor, 1987, Biometrics 43:207-211)

      n = (z_{1-alpha/2} sqrt(psi) + z_{1-beta} sqrt(psi - delta^2))^2 / delta^2

  and the power of n pairs is Phi((|delta| sqrt(n) - z_{1-alpha/2} sqrt(psi)) / sqrt(psi - delta^2)).
  psi is at least |delta| (every flip one way).
- **unpaired, worst case**: two independent samples (different items, or outcomes that do not
  correlate between the runs), rates 0.5 and 0.5 + delta (the largest binomial variance):
  statsmodels' ``NormalIndPower`` on Cohen's h. A paired design whose outcomes are independent
  between the runs has psi = 0.5 and needs the same number.

``fairtune compare`` corrects its p-values with Holm's method over every test of a comparison; in
the worst case the test of interest has the smallest p and must pass alpha / tests (``--tests``).

``--simulate N`` checks the formula: N simulated paired samples per row, tested with
``fairtune.compare.paired._mcnemar`` (exact below 25 discordant pairs, continuity-corrected above:
what ``fairtune compare`` runs), so the printed "simulated" power is that of fairtune's own test.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
from scipy.stats import norm
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import proportion_effectsize

SUITES = (   # pairs in each built-in suite or part of one (stereotype-pairs, this version)
    ("gender, all", 1098),
    ("gender, one domain (~210)", 210),
    ("religion, all", 516),
    ("hand-written gender only (before)", 38),
)
DISCORDANCE = (0.10, 0.15, 0.20, 0.30, 0.50)


def mcnemar_pairs(delta: float, psi: float, alpha: float, power: float) -> int:
    za, zb = norm.ppf(1 - alpha / 2), norm.ppf(power)
    return math.ceil((za * math.sqrt(psi) + zb * math.sqrt(psi - delta ** 2)) ** 2 / delta ** 2)


def mcnemar_power(n: int, delta: float, psi: float, alpha: float) -> float:
    za = norm.ppf(1 - alpha / 2)
    return float(norm.cdf((abs(delta) * math.sqrt(n) - za * math.sqrt(psi)) / math.sqrt(psi - delta ** 2)))


def mcnemar_detectable(n: int, psi: float, alpha: float, power: float) -> float:
    """The smallest |delta| detected with the given power (bisection on the power formula)."""
    low, high = 1e-6, psi
    for _ in range(100):
        mid = (low + high) / 2
        low, high = (mid, high) if mcnemar_power(n, mid, psi, alpha) < power else (low, mid)
    return high


def unpaired_per_group(delta: float, alpha: float, power: float, base: float = 0.5) -> int:
    h = abs(proportion_effectsize(base + delta, base))
    return math.ceil(NormalIndPower().solve_power(effect_size=h, alpha=alpha, power=power, ratio=1.0))


def simulated_power(n: int, delta: float, psi: float, alpha: float, reps: int, seed: int = 0) -> float:
    from fairtune.compare.paired import _mcnemar

    rng = np.random.default_rng(seed)
    up, down = (psi + delta) / 2, (psi - delta) / 2          # P(0 -> 1), P(1 -> 0)
    hits = 0
    for _ in range(reps):
        a_only, b_only, _ = rng.multinomial(n, [down, up, 1 - psi])
        hits += _mcnemar(int(a_only), int(b_only)) < alpha
    return hits / reps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--delta", type=float, default=0.05, help="change in the rate to detect (default 0.05)")
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--power", type=float, default=0.80)
    parser.add_argument("--tests", type=int, default=40,
                        help="tests in one comparison, for the Holm worst case (the smallest p faces alpha/tests)")
    parser.add_argument("--simulate", type=int, default=0, help="simulated samples per row (0: none)")
    args = parser.parse_args()
    delta, alpha, power = args.delta, args.alpha, args.power

    print(f"Pairs needed to detect a change of {delta:.2f} in a rate, two-sided alpha {alpha}, power {power}\n")
    print("| design | discordance psi | pairs needed |")
    print("| --- | --- | --- |")
    for psi in DISCORDANCE:
        print(f"| paired, McNemar | {psi:.2f} | {mcnemar_pairs(delta, psi, alpha, power)} |")
    holm = alpha / args.tests
    for psi in (0.10, 0.20):
        print(f"| paired, McNemar, Holm over {args.tests} tests (alpha {holm:.5f}) | {psi:.2f} | "
              f"{mcnemar_pairs(delta, psi, holm, power)} |")
    n = unpaired_per_group(delta, alpha, power)
    print(f"| unpaired, worst case (0.50 vs {0.5 + delta:.2f}) | - | {n} per run |")

    print(f"\nPower to detect {delta:.2f} with the built-in suites (paired, McNemar), and the smallest change "
          f"detected with power {power}\n")
    header = " | ".join(f"power, psi {psi:.2f}" for psi in DISCORDANCE)
    print(f"| suite | pairs | {header} | detectable at psi 0.20 | 95% CI half-width of one run's rate |")
    print("| --- | --- |" + " --- |" * len(DISCORDANCE) + " --- | --- |")
    for name, pairs in SUITES:
        powers = " | ".join(f"{mcnemar_power(pairs, delta, psi, alpha):.2f}" for psi in DISCORDANCE)
        detectable = mcnemar_detectable(pairs, 0.20, alpha, power)
        half_width = norm.ppf(1 - alpha / 2) * math.sqrt(0.25 / pairs)
        print(f"| {name} | {pairs} | {powers} | {detectable:.3f} | {half_width:.3f} |")

    za, zb = norm.ppf(1 - alpha / 2), norm.ppf(power)
    print(f"\nThe other gender metrics, as rates of 0/1 outcomes (a 5-point change in SS is {delta:.2f} in its rate)\n")
    print("| metric | items | power to detect the change, psi 0.10 / 0.20 | detectable at psi 0.20 |")
    print("| --- | --- | --- | --- |")
    for name, n in (("stereoset SS, gender (per-target average)", 632),):
        print(f"| {name} | {n} | {mcnemar_power(n, delta, 0.10, alpha):.2f} / "
              f"{mcnemar_power(n, delta, 0.20, alpha):.2f} | {mcnemar_detectable(n, 0.20, alpha, power):.3f} |")
    # The WinoBias gap is accuracy(pro) - accuracy(anti), each over 600 lines; a change in the gap is
    # the difference of two paired changes, whose variances add: about psi / 600 each.
    gap_power = [float(norm.cdf(delta / math.sqrt(2 * psi / 600) - za)) for psi in (0.10, 0.20)]
    print(f"| coreference winobias gap (pro - anti) | 600 + 600 | {gap_power[0]:.2f} / {gap_power[1]:.2f} | "
          f"{(za + zb) * math.sqrt(2 * 0.20 / 600):.3f} |")

    if args.simulate:
        print(f"\nSimulated power of fairtune's McNemar test ({args.simulate} samples a row)\n")
        print("| pairs | psi | formula | simulated |")
        print("| --- | --- | --- | --- |")
        for pairs in (1098, 210):
            for psi in (0.10, 0.20, 0.30):
                formula = mcnemar_power(pairs, delta, psi, alpha)
                print(f"| {pairs} | {psi:.2f} | {formula:.3f} | "
                      f"{simulated_power(pairs, delta, psi, alpha, args.simulate):.3f} |")


if __name__ == "__main__":
    main()
