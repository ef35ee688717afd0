"""dupru-upscale: a folder of a user's own images (no ground truth) through a pruned ticket, with and without tiles."""
import os
import os.path as osp

import cv2
import numpy as np
import pytest
import torch

from dupru_basicsr.export import export_compressed
from dupru_basicsr.pruning import Pruner
from dupru_basicsr.upscale import UpscaleError, main, upscale_images, upscale_tensor


def _ticket(tmp_path, seed=0):
    """A small MSRResNet x4 (8 features, 2 blocks) with 80 % of its body pruned, saved as BasicSR saves it; the EMA
    differs from params so the test sees which one ran."""
    from basicsr.archs.srresnet_arch import MSRResNet
    torch.manual_seed(seed)
    net = MSRResNet(num_feat=8, num_block=2, upscale=4).eval()
    Pruner(net, ['body.*.weight']).prune(sparsity=0.8)
    ema = MSRResNet(num_feat=8, num_block=2, upscale=4).eval()
    ema.load_state_dict(net.state_dict())
    with torch.no_grad():
        ema.conv_last.bias.add_(torch.tensor([0.1, -0.05, 0.08]))  # the output moves by 20-25 levels
    path = str(tmp_path / 'ticket.pth')
    torch.save({'params': net.state_dict(), 'params_ema': ema.state_dict()}, path)
    return path, net, ema


def _photos(folder):
    """RGB (PNG and JPEG), grey, RGBA and 16-bit images from skimage's photos, a few tens of pixels each."""
    from skimage import data
    os.makedirs(folder, exist_ok=True)
    rgb = cv2.cvtColor(data.astronaut()[100:117, 180:200], cv2.COLOR_RGB2BGR)  # 20 x 17, odd sizes on purpose
    cv2.imwrite(osp.join(folder, 'rgb.png'), rgb)
    cv2.imwrite(osp.join(folder, 'photo.jpg'), cv2.cvtColor(data.coffee()[:16, :24], cv2.COLOR_RGB2BGR))
    cv2.imwrite(osp.join(folder, 'grey.png'), data.camera()[200:213, 200:221])
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1, ), 200, np.uint8)], axis=2)
    cv2.imwrite(osp.join(folder, 'rgba.png'), rgba)
    cv2.imwrite(osp.join(folder, 'deep.png'), rgb.astype(np.uint16) * 257)
    with open(osp.join(folder, 'notes.txt'), 'w') as f:  # not an image: ignored
        f.write('x')
    return rgb


def _expected(net, bgr):
    """What the network gives for an 8-bit BGR image, as BasicSR's img2tensor / tensor2img would compute it."""
    lq = torch.from_numpy(bgr[:, :, ::-1].astype(np.float32).transpose(2, 0, 1).copy() / 255.).unsqueeze(0)
    with torch.no_grad():
        sr = net(lq)[0].clamp(0, 1).numpy().transpose(1, 2, 0)[:, :, ::-1]
    return (sr * 255).round().astype(np.uint8)


def test_a_folder_of_own_images_is_upscaled_by_the_tickets_ema_network(tmp_path, capsys):
    path, net, ema = _ticket(tmp_path)
    rgb = _photos(tmp_path / 'in')
    code = main(['-i', str(tmp_path / 'in'), '-o', str(tmp_path / 'out'), '--model', path])
    assert code == 0, capsys.readouterr().err
    assert sorted(os.listdir(tmp_path / 'out')) == ['deep.png', 'grey.png', 'photo.jpg', 'rgb.png', 'rgba.png']
    out = cv2.imread(str(tmp_path / 'out' / 'rgb.png'), cv2.IMREAD_UNCHANGED)
    assert out.shape == (68, 80, 3)
    # params_ema ran (not params), exactly as BasicSR would compute it, to the rounding of one level
    assert np.abs(out.astype(int) - _expected(ema, rgb).astype(int)).max() <= 1
    assert np.abs(out.astype(int) - _expected(net, rgb).astype(int)).max() > 5
    grey = cv2.imread(str(tmp_path / 'out' / 'grey.png'), cv2.IMREAD_UNCHANGED)
    assert grey.shape == (52, 84) and grey.dtype == np.uint8  # grey in, grey out
    rgba = cv2.imread(str(tmp_path / 'out' / 'rgba.png'), cv2.IMREAD_UNCHANGED)
    assert rgba.shape == (68, 80, 4) and (rgba[:, :, 3] == 200).all()  # alpha resized, kept
    assert np.abs(rgba[:, :, :3].astype(int) - out.astype(int)).max() <= 1  # colour as the RGB image's
    deep = cv2.imread(str(tmp_path / 'out' / 'deep.png'), cv2.IMREAD_UNCHANGED)
    assert deep.dtype == np.uint16 and np.abs(deep.astype(int) / 257 - out.astype(int)).max() <= 1.01
    assert cv2.imread(str(tmp_path / 'out' / 'photo.jpg')).shape == (64, 96, 3)
    printed = capsys.readouterr().out
    assert 'MSRResNet x4 from' in printed and '5 image(s) on cpu' in printed
    convs = [m.weight for m in ema.modules() if isinstance(m, torch.nn.Conv2d)]
    zeros = sum(int((w == 0).sum()) for w in convs) / sum(w.numel() for w in convs)
    assert f'({zeros:.2%} of its conv weights are zero)' in printed and zeros > 0.2
    assert not [n for n in os.listdir(tmp_path / 'out') if n.endswith('.tmp')]
    mode = os.stat(tmp_path / 'out' / 'rgb.png').st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask  # what a plain write gives, not mkstemp's 0600


def test_tiles_join_into_the_whole_images_output(tmp_path):
    _, net, _ = _ticket(tmp_path)
    torch.manual_seed(1)
    lq = torch.rand(1, 3, 21, 19)
    whole = upscale_tensor(net, lq, 4)
    # MSRResNet with 2 blocks sees 7 input pixels around each one: a pad of 10 leaves only float rounding
    tiled = upscale_tensor(net, lq, 4, tile=8, tile_pad=10)
    assert tiled.shape == whole.shape == (1, 3, 84, 76)
    torch.testing.assert_close(tiled, whole, atol=1e-5, rtol=0)
    no_pad = upscale_tensor(net, lq, 4, tile=8, tile_pad=0)  # the pad is what makes them agree
    assert (no_pad - whole).abs().max() > 1e-3


def test_a_compressed_ticket_and_tiles_through_the_command_write_the_same_images(tmp_path, capsys):
    path, _, _ = _ticket(tmp_path)
    small = str(tmp_path / 'small.pth')
    export_compressed(path, small)
    _photos(tmp_path / 'in')
    assert main(['-i', str(tmp_path / 'in' / 'rgb.png'), '-o', str(tmp_path / 'a'), '--model', path]) == 0
    assert main(['-i', str(tmp_path / 'in' / 'rgb.png'), '-o', str(tmp_path / 'b'), '--model', small, '--tile', '8',
                 '--tile-pad', '10', '--suffix', '_x4', '--ext', 'png']) == 0
    a = cv2.imread(str(tmp_path / 'a' / 'rgb.png'))
    b = cv2.imread(str(tmp_path / 'b' / 'rgb_x4.png'))
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1 and (a == b).mean() > 0.99
    assert 'tiles of 8 px + 10 px pad' in capsys.readouterr().out


def test_arch_opt_builds_the_network_from_an_option_file(tmp_path, capsys):
    path, _, ema = _ticket(tmp_path)
    rgb = _photos(tmp_path / 'in')
    opt = tmp_path / 'net.yml'
    opt.write_text('network_g:\n  type: MSRResNet\n  num_in_ch: 3\n  num_out_ch: 3\n  num_feat: 8\n  num_block: 2\n'
                   '  upscale: 4\n')
    assert main(['-i', str(tmp_path / 'in' / 'rgb.png'), '-o', str(tmp_path / 'out'), '--model', path, '--arch-opt',
                 str(opt)]) == 0
    out = cv2.imread(str(tmp_path / 'out' / 'rgb.png'))
    assert np.abs(out.astype(int) - _expected(ema, rgb).astype(int)).max() <= 1
    opt.write_text('network_g:\n  type: MSRResNet\n  num_feat: 16\n  num_block: 2\n  upscale: 4\n')
    assert main(['-i', str(tmp_path / 'in'), '-o', str(tmp_path / 'other'), '--model', path, '--arch-opt',
                 str(opt)]) == 2
    err = capsys.readouterr().err
    assert err.startswith('dupru-upscale: error: ') and 'does not fit the network of' in err and '--arch-opt' in err
    assert not (tmp_path / 'other').exists()


def _refusal(tmp_path, capsys, args):
    before = sorted(os.listdir(tmp_path))
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2 and err.startswith('dupru-upscale: error: ') and err.count('\n') == 1, err
    assert sorted(os.listdir(tmp_path)) == before  # nothing written, no output folder made
    return err


def test_bad_input_is_refused_with_one_line_before_anything_is_written(tmp_path, capsys):
    path, _, _ = _ticket(tmp_path)
    _photos(tmp_path / 'in')
    (tmp_path / 'empty').mkdir()
    out = str(tmp_path / 'out')
    inp = str(tmp_path / 'in')
    assert 'does not exist' in _refusal(tmp_path, capsys, ['-i', str(tmp_path / 'nope'), '-o', out, '--model', path])
    assert 'holds no image file' in _refusal(tmp_path, capsys, ['-i', str(tmp_path / 'empty'), '-o', out, '--model',
                                                                path])
    assert 'is an input image' in _refusal(tmp_path, capsys, ['-i', inp, '-o', inp, '--model', path])
    cv2.imwrite(osp.join(inp, 'rgb.jpg'), cv2.imread(osp.join(inp, 'rgb.png')))  # rgb.png and rgb.jpg -> rgb.png
    assert 'both be written to' in _refusal(tmp_path, capsys, ['-i', inp, '-o', out, '--model', path, '--ext', 'png'])
    assert 'does not exist' in _refusal(tmp_path, capsys, ['-i', inp, '-o', out, '--model', str(tmp_path / 'x.pth')])
    corrupt = tmp_path / 'corrupt.pth'
    corrupt.write_bytes(open(path, 'rb').read()[:300])
    assert 'truncated' in _refusal(tmp_path, capsys, ['-i', inp, '-o', out, '--model', str(corrupt)])
    assert '--tile -1' in _refusal(tmp_path, capsys, ['-i', inp, '-o', out, '--model', path, '--tile', '-1'])
    assert '--ext gif' in _refusal(tmp_path, capsys, ['-i', inp, '-o', out, '--model', path, '--ext', 'gif'])
    assert 'cuda' in _refusal(tmp_path, capsys, ['-i', inp, '-o', out, '--model', path, '--device', 'cuda:7'])
    (tmp_path / 'afile').write_text('x')
    assert 'is a file' in _refusal(tmp_path, capsys, ['-i', inp, '-o', str(tmp_path / 'afile'), '--model', path])
    corrupt.unlink()
    (tmp_path / 'afile').unlink()


def test_an_unreadable_image_is_named_and_left_out_and_the_others_are_written(tmp_path, capsys):
    path, _, _ = _ticket(tmp_path)
    _photos(tmp_path / 'in')
    (tmp_path / 'in' / 'broken.png').write_bytes(b'\x89PNG\r\n\x1a\n not really')
    code = main(['-i', str(tmp_path / 'in'), '-o', str(tmp_path / 'out'), '--model', path])
    captured = capsys.readouterr()
    assert code == 1
    assert 'broken.png cannot be read as an image' in captured.out
    assert captured.err.startswith('dupru-upscale: 5 image(s) written, 1 left out: ') and 'broken.png' in captured.err
    assert 'broken.png' not in os.listdir(tmp_path / 'out') and len(os.listdir(tmp_path / 'out')) == 5


def test_upscale_images_returns_what_it_wrote(tmp_path):
    path, _, _ = _ticket(tmp_path)
    _photos(tmp_path / 'in')
    lines = []
    written, left_out = upscale_images(path, str(tmp_path / 'in' / 'grey.png'), str(tmp_path / 'o'),
                                       progress=lines.append)
    assert written == [str(tmp_path / 'o' / 'grey.png')] and left_out == [] and len(lines) == 2
    with pytest.raises(UpscaleError, match='is an input image'):
        upscale_images(path, str(tmp_path / 'o'), str(tmp_path / 'o'))
