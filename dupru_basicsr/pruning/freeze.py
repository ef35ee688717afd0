"""Freeze rules: which target entries keep their value during an optimizer step.

- `dupru` (paper eq. 4): |W| < eps, "balanced learning": weights of both signs keep learning, and pruned zeros and
  weights that fall inside (-eps, eps) freeze.
- `upru`: W < eps, the signed test of the lottery-ticket reference code (its main.py): every negative weight
  freezes too, the "unbalanced learning" the paper blames for UPru's loss.
- `imp`: only the pruned entries (~keep_mask) are held; everything else learns.

A frozen entry gets a zero gradient (as the paper and reference code do) *and* its value is restored after the
step, because momentum and weight decay move weights whose gradient is zero.

A rule is a function `(weight, keep_mask, eps) -> bool tensor` (True = frozen). A rule marked `elementwise = True`
decides every entry from that entry alone, so the pruner applies it once per step to all targets flattened into one
buffer (a fixed number of ops whatever the number of target tensors); other rules are called once per target tensor
with its own shape.
"""


def frozen_dupru(weight, keep_mask, eps):
    return weight.abs() < eps  # two ops on the flat buffer of all targets


def frozen_upru(weight, keep_mask, eps):
    return weight < eps


def frozen_imp(weight, keep_mask, eps):
    return ~keep_mask


for _rule in (frozen_dupru, frozen_upru, frozen_imp):
    _rule.elementwise = True

FREEZE_RULES = {'dupru': frozen_dupru, 'upru': frozen_upru, 'imp': frozen_imp}
