"""Pruning schedules (the `pruning.schedule` / `pruning.rounds` options): when masks change.

- `RoundSchedule`: iterative pruning in rounds. Iterations are 1-based as in BasicSR. Round r (0-based) covers
  iterations start(r)+1 .. start(r)+length(r). Round 0 trains the dense network; every later round begins with one
  prune (paper: T rounds = T-1 prunes). How much each prune removes (`pruning.rate`) is the caller's: the schedule
  says only when.
- `GradualSchedule`: gradual magnitude pruning within one run (`schedule: gradual`).
"""


def rate_for_sparsity(sparsity, prunes):
    """The rate (% of the survivors removed per prune) that leaves `1 - sparsity` of the weights after `prunes`
    prunes: (1 - rate / 100) ** prunes = 1 - sparsity. T rounds make T - 1 prunes."""
    if not 0 <= sparsity < 1 or prunes < 1:
        raise ValueError(f'sparsity {sparsity!r} must be in [0, 1) and prunes {prunes!r} >= 1')
    return 100 * (1 - (1 - sparsity)**(1 / prunes))


class RoundSchedule:

    def __init__(self, lengths, rewind_iter=None):
        lengths = [int(n) for n in lengths]
        if not lengths or min(lengths) < 1:
            raise ValueError(f'Round lengths must be positive integers, got {lengths}.')
        if rewind_iter is not None and not 0 <= rewind_iter < lengths[0]:
            raise ValueError(f'Late-rewinding iteration {rewind_iter} is not inside the first round '
                             f'(0..{lengths[0] - 1}).')
        self.lengths = lengths
        self.rewind_iter = rewind_iter
        self.starts = [sum(lengths[:r]) for r in range(len(lengths))]
        self.round = 0  # index of the round whose masks are in place (= number of prunes done)

    @property
    def num_rounds(self):
        return len(self.lengths)

    def round_of(self, it):
        """0-based round of the 1-based iteration `it` (iterations past the end belong to the last round)."""
        r = 0
        while r + 1 < len(self.starts) and it > self.starts[r + 1]:
            r += 1
        return r

    def local_iter(self, it):
        """1-based position of iteration `it` inside its round."""
        return it - self.starts[self.round_of(it)]

    def is_round_end(self, it):
        r = self.round_of(it)
        return it == self.starts[r] + self.lengths[r]

    def needs_prune(self, it):
        """True when iteration `it` starts a round whose prune has not been done yet."""
        return self.round_of(it) > self.round

    def is_snapshot_iter(self, it):
        """True at the iteration after which late rewinding (`iter_<k>`) snapshots the weights (k=0: before it=1)."""
        return self.rewind_iter is not None and it == self.rewind_iter

    def state_dict(self):
        return {'lengths': list(self.lengths), 'rewind_iter': self.rewind_iter, 'round': self.round}

    def load_state_dict(self, state):
        # (training states written before the rate moved out of the schedule also hold `rate`: the resume check of
        # the options compares it, dupru_basicsr.plugin.pruning_options.check_resume_options)
        if list(state['lengths']) != self.lengths:
            raise ValueError(f'Saved pruning schedule (rounds {state["lengths"]}) differs from this run (rounds '
                             f'{self.lengths}); resume with the same options.')
        self.round = int(state['round'])


class GradualSchedule:
    """Gradual magnitude pruning within one run (Zhu & Gupta 2017): the target sparsity follows a cubic ramp

        s(t) = s_f * (1 - (1 - (t - t0) / (t1 - t0))^3)   for t0 <= t <= t1,

    applied every `frequency` iterations from `start_iter` (t0) to `end_iter` (t1); masks only tighten, nothing
    rewinds. Iterations are 1-based; pruning happens before the step of iteration t.
    """

    def __init__(self, start_iter, end_iter, final_sparsity, frequency):
        if not 0 <= start_iter < end_iter:
            raise ValueError(f'Gradual pruning needs 0 <= start_iter < end_iter, got {start_iter}, {end_iter}.')
        if not 0 < final_sparsity < 1:
            raise ValueError(f'final_sparsity must be in (0, 1), got {final_sparsity}.')
        if frequency < 1:
            raise ValueError(f'frequency must be >= 1, got {frequency}.')
        self.start_iter, self.end_iter = int(start_iter), int(end_iter)
        self.final_sparsity, self.frequency = float(final_sparsity), int(frequency)

    def is_prune_iter(self, it):
        offset = it - self.start_iter
        return offset >= 0 and it <= self.end_iter and (offset % self.frequency == 0 or it == self.end_iter)

    def sparsity_at(self, it):
        if it < self.start_iter:
            return 0.0
        progress = min(1.0, (it - self.start_iter) / (self.end_iter - self.start_iter))
        return self.final_sparsity * (1.0 - (1.0 - progress)**3)
