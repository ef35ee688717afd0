"""The pruner follows its parameters across devices, and under torch.distributed every rank checks that all ranks
hold the same masks after each prune (one all-reduce of a checksum)."""
import os
import socket
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from conftest import device_params
from dupru_basicsr.pruning import Mask, Pruner
from dupru_basicsr.pruning.distributed import check_masks_agree, mask_checksum


def _chain(seed=0, n=3):
    torch.manual_seed(seed)
    return nn.Sequential(*[nn.Conv2d(4, 4, 3, padding=1) for _ in range(n)])


@pytest.mark.parametrize('device', device_params())
def test_pruner_follows_the_model_to_another_device_and_loaded_masks_too(device, tmp_path):
    """Built on the CPU, moved with model.to(device): prune, apply_mask, steps, state and Mask.load all follow."""
    net = _chain()
    pruner = Pruner(net, ['*.weight'], 'dupru', eps=1e-2)
    pruner.snapshot()
    pruner.prune(30)  # masks made on the CPU
    net.to(device)
    pruner.prune(30)
    assert all(m.device == torch.device(device) or m.device.type == device for _, m in pruner.mask.items())
    opt = torch.optim.Adam(net.parameters(), lr=1e-2, weight_decay=1e-2)
    pruner.attach(opt)
    x = torch.randn(2, 4, 6, 6).to(device)
    for _ in range(2):
        opt.zero_grad()
        net(x).square().mean().backward()
        opt.step()
    for n, p in pruner.params.items():
        pruned = ~pruner.mask[n]
        assert pruned.any() and torch.equal(p[pruned], torch.zeros_like(p[pruned])), n
    path = str(tmp_path / 'masks.pth')
    pruner.mask.save(path)
    assert all(m.device.type == 'cpu' for _, m in Mask.load(path).items())
    loaded = Mask.load(path, device=device)
    assert all(m.device.type == torch.device(device).type for _, m in loaded.items()) and loaded.equal(pruner.mask)
    pruner.mask = Mask.load(path)  # CPU masks handed to a pruner of a model on `device`
    pruner.apply_mask()
    pruner.rewind('init')  # the rewind state stayed on the CPU
    pruner.load_state_dict(pruner.state_dict())
    assert all(m.device.type == torch.device(device).type for _, m in pruner.mask.items())
    pruner.prune(30)


def test_mask_checksum_tells_apart_masks_with_the_same_counts():
    keep = torch.zeros(2, 50, dtype=torch.bool)
    keep[0, 3] = keep[1, 7] = True
    moved = torch.zeros(2, 50, dtype=torch.bool)
    moved[0, 4] = moved[1, 7] = True
    swapped = torch.zeros(2, 50, dtype=torch.bool)
    swapped[0, 7] = swapped[1, 3] = True
    sums = [mask_checksum(Mask({'a': m})) for m in (keep, moved, swapped)]
    assert torch.equal(mask_checksum(Mask({'a': keep.clone()})), sums[0])
    assert not torch.equal(sums[0], sums[1]) and not torch.equal(sums[0], sums[2])
    check_masks_agree(Mask({'a': keep}))  # no process group: nothing to compare, no error


def _rank_prunes(rank, port, perturb, results):
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    dist.init_process_group('gloo', rank=rank, world_size=2)
    try:
        net = _chain(seed=0)
        if perturb and rank == 1:
            with torch.no_grad():  # rank 1's weights drifted: its smallest weights are other ones
                net[0].weight.mul_(torch.linspace(0.1, 10, net[0].weight.numel()).view_as(net[0].weight))
        pruner = Pruner(net, ['*.weight'], 'dupru')
        try:
            pruner.prune(40)
            results[rank] = 'agree'
        except RuntimeError as e:
            results[rank] = str(e)
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize('perturb', [False, True])
def test_ranks_with_different_masks_stop_with_a_clear_error(perturb):
    results = mp.get_context('spawn').Manager().dict()
    mp.spawn(_rank_prunes, args=(_free_port(), perturb, results), nprocs=2, join=True)
    if perturb:
        for rank in (0, 1):
            assert 'pruning masks differ between the 2 ranks' in results[rank], results[rank]
    else:
        assert dict(results) == {0: 'agree', 1: 'agree'}
