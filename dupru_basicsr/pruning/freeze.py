"""Freeze rules: which target entries keep their value during an optimizer step.

- `dupru` (paper eq. 4): |W| < eps, "balanced learning": weights of both signs keep learning, and pruned zeros and
  weights that fall inside (-eps, eps) freeze.
- `upru`: W < eps, the signed test of the lottery-ticket reference code (its main.py): every negative weight
  freezes too, the "unbalanced learning" the paper blames for UPru's loss.
- `imp`: only the pruned entries (~keep_mask) are held; everything else learns.

A frozen entry gets a zero gradient (as the paper and reference code do) *and* its value is restored after the
step, because momentum and weight decay move weights whose gradient is zero.
"""


def frozen_dupru(weight, keep_mask, eps):
    return (weight < eps) & (weight > -eps)  # |W| < eps without a float temporary


def frozen_upru(weight, keep_mask, eps):
    return weight < eps


def frozen_imp(weight, keep_mask, eps):
    return ~keep_mask


FREEZE_RULES = {'dupru': frozen_dupru, 'upru': frozen_upru, 'imp': frozen_imp}
