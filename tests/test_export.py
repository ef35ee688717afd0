"""dupru-export: compressed sparse checkpoints (bit-exact round trip, sizes, corruption) and ONNX export."""
import os.path as osp
import pytest
import torch

from dupru_basicsr.export import ExportError, export_compressed, load_compressed, load_into, main
from dupru_basicsr.pruning import Pruner


def _ticket(tmp_path, sparsity=0.9, seed=0, nf=64, nb=16):
    """A MSRResNet x4 checkpoint (full size by default) with `sparsity` of its body pruned, like a DUPru ticket."""
    from basicsr.archs.srresnet_arch import MSRResNet
    torch.manual_seed(seed)
    net = MSRResNet(num_feat=nf, num_block=nb, upscale=4)
    pruner = Pruner(net, ['body.*.weight'])
    pruner.prune(sparsity=sparsity)
    path = str(tmp_path / 'ticket.pth')
    ema = {k: v + 0.0 for k, v in net.state_dict().items()}
    torch.save({'params': net.state_dict(), 'params_ema': ema, 'keep_masks': pruner.mask.state_dict()}, path)
    return path, net, pruner


def test_round_trip_is_bit_exact_and_sizes_shrink(tmp_path, capsys):
    path, net, pruner = _ticket(tmp_path)
    assert pruner.mask.sparsity() == pytest.approx(0.9, abs=1e-4)  # 33178 of 36864 per layer
    with torch.no_grad():
        net.conv_first.weight[0, 0, 0, 0] = -0.0  # a signed zero survives
    torch.save({'params': net.state_dict(), 'params_ema': net.state_dict()}, path)
    out = str(tmp_path / 'small.pth')
    dense_bytes, small_bytes = export_compressed(path, out)
    restored = load_compressed(out)
    for key in ('params', 'params_ema'):
        assert list(restored[key]) == list(net.state_dict())
        for k, v in net.state_dict().items():
            assert restored[key][k].dtype == v.dtype
            assert torch.equal(restored[key][k].view(torch.int32), v.view(torch.int32)), k  # bit-exact
    # a plain BasicSR MSRResNet loads it strictly
    from basicsr.archs.srresnet_arch import MSRResNet
    load_into(MSRResNet(num_feat=64, num_block=16, upscale=4), out)
    # one network: the dense fp32 file vs the compressed one (params only)
    torch.save({'params': net.state_dict()}, path)
    dense_bytes, small_bytes = export_compressed(path, out)
    half_bytes = export_compressed(path, str(tmp_path / 'half.pth'), half=True)[1]
    with capsys.disabled():
        print(f'\nMSRResNet x4, body sparsity {100 * pruner.mask.sparsity():.2f}%: dense {dense_bytes} B, '
              f'compressed fp32 {small_bytes} B ({small_bytes / dense_bytes:.3f}), '
              f'fp16 {half_bytes} B ({half_bytes / dense_bytes:.3f})')
    assert small_bytes < 0.35 * dense_bytes  # the dense non-body layers (22 % of the weights) bound fp32 here
    assert half_bytes <= 0.25 * dense_bytes
    assert main([path, '--out', str(tmp_path / 'cli.pth'), '--half']) == 0
    assert 'smaller' in capsys.readouterr().out


def test_corrupt_and_mismatched_files_are_rejected(tmp_path):
    path, _, _ = _ticket(tmp_path, sparsity=0.5, nf=16, nb=2)
    out = str(tmp_path / 'small.pth')
    export_compressed(path, out)
    data = torch.load(out, weights_only=True)
    data['payloads']['params']['values'][3] += 1.0  # silent bit rot
    torch.save(data, str(tmp_path / 'rotten.pth'))
    with pytest.raises(ExportError, match='rotten.pth is corrupted'):
        load_compressed(str(tmp_path / 'rotten.pth'))
    with open(out, 'rb') as f:
        head = f.read(1000)
    with open(tmp_path / 'truncated.pth', 'wb') as f:
        f.write(head)
    with pytest.raises(ExportError, match='truncated.pth.*truncated or not a PyTorch checkpoint'):
        load_compressed(str(tmp_path / 'truncated.pth'))
    with pytest.raises(ExportError, match='is not a dupru-sparse-v1 file'):
        load_compressed(path)
    from basicsr.archs.srresnet_arch import MSRResNet
    with pytest.raises(ExportError, match='does not fit MSRResNet.*num_feat'):
        load_into(MSRResNet(num_feat=32, num_block=2, upscale=4), out)
    assert main([str(tmp_path / 'missing.pth'), '--out', str(tmp_path / 'x.pth')]) == 2


def test_onnx_export_of_a_compressed_ticket(tmp_path):
    onnx = pytest.importorskip('onnx')
    path, net, _ = _ticket(tmp_path, sparsity=0.5, nf=16, nb=2)
    small = str(tmp_path / 'small.pth')
    export_compressed(path, small)
    onnx_path = str(tmp_path / 'model.onnx')
    assert main([small, '--onnx', onnx_path]) == 0
    model = onnx.load(onnx_path)
    onnx.checker.check_model(model)
    assert osp.getsize(onnx_path) > 10000
