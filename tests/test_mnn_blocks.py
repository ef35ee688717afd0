"""MNN's block-sparse storage: a ticket pruned in blocks of 4 output channels converts to MNN convolutions stored
sparse with sparseBlockOC 4 (the compression-params file the converter needs), its outputs match PyTorch, and the
check names each convolution MNN stored otherwise (blocks of 1, or dense below its threshold) and why."""
import numpy as np
import torch

from dupru_basicsr.deploy.mnn import MNNRunner, _module_path, check_sparse_storage, convert_onnx, stored_convolutions
from dupru_basicsr.pruning import prune_model


def _onnx(tmp_path, sparsity, granularity, seed=0):
    from basicsr.archs.srresnet_arch import MSRResNet
    torch.manual_seed(seed)
    net = MSRResNet(num_feat=16, num_block=2, upscale=4).eval()
    prune_model(net, sparsity, granularity=granularity)
    path = str(tmp_path / 'net.onnx')
    torch.onnx.export(net, torch.rand(1, 3, 16, 16), path, opset_version=13, dynamo=False)
    return net, path


def test_onnx_op_names_map_back_to_module_paths():
    assert _module_path('/body/body.0/conv1/Conv_output_0') == 'body.0.conv1'
    assert _module_path('/upconv1/Conv_output_0') == 'upconv1'
    assert _module_path('/body/body.0/rdb1/conv1/Conv_output_0') == 'body.0.rdb1.conv1'


def test_a_1x4_ticket_is_stored_in_blocks_of_4_and_runs_as_in_pytorch(tmp_path):
    net, onnx_path = _onnx(tmp_path, 0.9, 'oc_block4')
    mnn = convert_onnx(onnx_path, str(tmp_path / 'net.mnn'), sparse=True, block=4)
    stored = stored_convolutions(mnn)
    targets = ['body.0.conv1', 'body.0.conv2', 'body.1.conv1', 'body.1.conv2', 'upconv1', 'upconv2', 'conv_hr']
    assert {k: stored[k] for k in targets} == dict.fromkeys(targets, 4)
    assert stored['conv_first'] is None and stored['conv_last'] is None  # dense layers stay dense
    assert check_sparse_storage(mnn, dict(net.state_dict()), 4) == []
    x = np.random.default_rng(0).random((1, 3, 20, 24), dtype=np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(MNNRunner(mnn, x.shape)(x), expected, rtol=0, atol=1e-4)


def test_the_check_names_layers_stored_otherwise_and_why(tmp_path):
    net, onnx_path = _onnx(tmp_path, 0.9, 'oc_block4')
    element = convert_onnx(onnx_path, str(tmp_path / 'element.mnn'), sparse=True, block=1)
    fell_back = dict(check_sparse_storage(element, dict(net.state_dict()), 4))
    assert fell_back['upconv1'] == 'stored sparse in blocks of 1, not 4'
    net, onnx_path = _onnx(tmp_path, 0.2, 'oc_block4')  # 20 % zero blocks: below MNN's 30 %
    light = convert_onnx(onnx_path, str(tmp_path / 'light.mnn'), sparse=True, block=4)
    fell_back = dict(check_sparse_storage(light, dict(net.state_dict()), 4))
    assert fell_back['upconv1'].startswith('stored dense: 2') and 'only above 30%' in fell_back['upconv1']


def _ticket(tmp_path, sparsity, granularity):
    from basicsr.archs.srresnet_arch import MSRResNet
    torch.manual_seed(0)
    net = MSRResNet(num_feat=16, num_block=2, upscale=4).eval()
    prune_model(net, sparsity, granularity=granularity)
    path = str(tmp_path / f'ticket_{granularity}.pth')
    torch.save({'params': net.state_dict()}, path)
    return path


def test_dupru_export_mnn_block_stores_blocks_and_prints_the_storage_check(tmp_path, capsys):
    from dupru_basicsr.export import main
    ticket = _ticket(tmp_path, 0.9, 'oc_block4')
    out = tmp_path / 'blocks.mnn'
    assert main([ticket, '--mnn', str(out), '--mnn-block', '4']) == 0
    printed = capsys.readouterr().out
    assert 'MNN stored every convolution that holds zeros sparse, in blocks of 4 output channels.' in printed
    assert stored_convolutions(str(out))['upconv1'] == 4
    # the same ticket without --mnn-block: element-wise storage, and the output says so per layer and what to do
    assert main([ticket, '--mnn', str(tmp_path / 'element.mnn')]) == 0
    printed = capsys.readouterr().out
    assert 'MNN stored every convolution that holds zeros sparse, in single weights.' in printed
    # an element-wise ticket asked for blocks: MNN keeps what it can, each other layer named with why
    element_ticket = _ticket(tmp_path, 0.5, 'element')
    assert main([element_ticket, '--mnn', str(tmp_path / 'odd.mnn'), '--mnn-block', '4']) == 0
    printed = capsys.readouterr().out
    assert 'did not store' in printed and '  upconv1: stored dense' in printed


def test_dupru_export_refuses_a_bad_mnn_block_before_writing(tmp_path, capsys):
    import pytest

    from dupru_basicsr.export import main
    ticket = _ticket(tmp_path, 0.9, 'oc_block4')
    for argv, message in (([ticket, '--mnn', str(tmp_path / 'a.mnn'), '--mnn-block', '0'], '--mnn-block 0: give'),
                          ([ticket, '--out', str(tmp_path / 'a.pth'), '--mnn-block', '4'], '--mnn-block goes with')):
        with pytest.raises(SystemExit) as stopped:
            main(argv)
        assert stopped.value.code == 2 and message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ['ticket_oc_block4.pth']
