"""The masks three tiny runs end with, against checksums recorded when they were written (2026-12-07): a change of the
pruning code, the step engines, the option parsing or the schedules that changes which weights survive fails here.

Masks only: they came out the same with AVX-512 and with AVX2 kernels (ATEN_CPU_CAPABILITY=avx2,
ONEDNN_MAX_CPU_ISA=AVX2), while the trained weights' last bits differ between those CPUs. The tiny demo's table
(tests/data/demo_tiny_table.md, checked by tests/test_demo.py) is the same guard for the scores."""
import pytest

from conftest import run_in, tiny_options
from dupru_basicsr.pruning.distributed import mask_checksum

RUNS = {
    # name: (pruning options, sum of pruning.distributed.mask_checksum of the final masks)
    'dupru': (dict(method='dupru', rounds=3, iters_per_round=3, rate=40), 3582104078328),
    'upru': (dict(method='upru', rounds=3, iters_per_round=3, rate=40, scope='global'), 3590173371023),
    'dupru_gradual': (dict(method='dupru', schedule='gradual', rounds=1, iters_per_round=9, start_iter=1, end_iter=7,
                           final_sparsity=0.6, frequency=2), 3989237608276),
}


@pytest.mark.parametrize('name', sorted(RUNS))
def test_final_masks_match_the_recorded_checksum(tmp_path, name):
    pruning, recorded = RUNS[name]
    opt = tiny_options(f'cks_{name}', 'DUPruModel', total_iter=9, val_set=None, pruning=pruning)
    model = run_in(tmp_path, opt)
    assert model.pruner.mask.sparsity() > 0.3  # pruned at all
    assert mask_checksum(model.pruner.mask).sum().item() == recorded
