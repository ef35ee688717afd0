"""Compressed sparse checkpoints and ONNX export of pruned networks: `dupru-export`.

    dupru-export experiments/<run>/models/net_g_round25_best.pth --out small.pth [--half]
    dupru-export small.pth --onnx model.onnx [--arch-opt options/train/....yml]
    dupru-export small.pth --mnn model.mnn     # MNN with its sparse convolution kernels (pip "dupru-basicsr[mnn]")
    dupru-export small.pth --mnn model.mnn --mnn-block 4   # a ticket pruned with granularity: oc_block4

An unstructured-sparse network is stored densely by PyTorch (a zero costs 4 bytes like any weight). The compressed
format (`dupru_basicsr.weights.compressed`) keeps, for every floating tensor, a bit-packed non-zero mask and the
surviving values (fp32, or fp16 with --half), with a few hundred bytes of overhead per file. `load_compressed` turns
it back into ordinary dense state dicts (bit-exact in fp32, including signed zeros) with the stock keys under
`params` / `params_ema`, which any BasicSR network loads strictly. A SHA-256 of the payload detects truncated or
corrupted files.
"""
import argparse
import os.path as osp
import sys
import torch

from dupru_basicsr.weights.arch import ArchError, infer_msrresnet_arch
from dupru_basicsr.weights.compressed import (NETWORK_KEYS, CompressedFormatError, is_compressed, pack_checkpoint,
                                              unpack_checkpoint)
from dupru_basicsr.weights.io import (atomic_save, load_checkpoint, load_failure, non_finite_entry, odd_state_entry,
                                      state_problem, strip_module_prefix)


class ExportError(ValueError):
    """A file that cannot be exported or loaded; the message names the file and the fix."""


def export_compressed(checkpoint, out_path, half=False):
    """Write the compressed form of a BasicSR checkpoint (`params`, `params_ema`, masks dropped: the non-zero bits
    are the masks). Returns (dense file bytes, compressed file bytes)."""
    check_output_path(out_path, '--out', [checkpoint])
    ckpt = _load(checkpoint)
    networks = {k: ckpt[k] for k in NETWORK_KEYS if isinstance(ckpt, dict) and k in ckpt}

    def problem(state):
        if not isinstance(state, dict):
            return type(state).__name__
        if not state:
            return 'an empty dict'
        if odd_state_entry(state) is not None:
            return 'a dict of other things than names and tensors'
        bad = non_finite_entry(state)
        return f'non-finite weights ({bad}): the run that saved it diverged' if bad else None

    if not networks or any(problem(v) for v in networks.values()):
        found = 'nothing of the kind' if not networks else ', '.join(
            f'{k}: {problem(v) or "a state dict"}' for k, v in networks.items())
        raise ExportError(f'{checkpoint} has no usable "params" / "params_ema" state dict ({found}): pass a BasicSR '
                          'network checkpoint (experiments/<name>/models/net_g_*.pth).')
    atomic_save(pack_checkpoint(ckpt, half=half), out_path)
    return osp.getsize(checkpoint), osp.getsize(out_path)


def _load(path):
    if not osp.isfile(path):
        raise ExportError(f'{path} does not exist.')
    try:
        return load_checkpoint(path)
    except RuntimeError as e:  # truncated, bad CRC, not a torch file: say which file and why
        cause = e.__cause__ or e
        raise ExportError(f'Cannot read {path} ({type(cause).__name__}: {load_failure(cause)}); the file is '
                          'truncated or not a PyTorch checkpoint.') from None


def _unpack(data, path):
    try:
        return unpack_checkpoint(data, path)
    except CompressedFormatError as e:
        raise ExportError(str(e)) from None


def load_compressed(path):
    """A compressed file -> {'params': dense state dict, 'params_ema': ...} (what BasicSR's load_network reads)."""
    return _unpack(_load(path), path)


def _dense_checkpoint(path):
    """An ordinary or compressed checkpoint file as {'params': dense state dict, ...}."""
    data = _load(path)
    return _unpack(data, path) if is_compressed(data) else data


def network_state(ckpt, path, param_key):
    """The state dict under `param_key` of the loaded checkpoint `ckpt` (file `path`), falling back to `params` as
    BasicSR's load_network does; ExportError naming the file and what it holds instead (state_problem)."""
    if not isinstance(ckpt, dict) or not any(k in ckpt for k in (param_key, 'params')):
        found = f'keys {list(ckpt)[:8]}' if isinstance(ckpt, dict) else f'a {type(ckpt).__name__}'
        raise ExportError(f'{path} has no usable "{param_key}" / "params" state dict (it holds {found}): pass a '
                          'BasicSR network checkpoint (experiments/<name>/models/net_g_*.pth) or a file written by '
                          'dupru-export.')
    key = param_key if param_key in ckpt else 'params'
    problem = state_problem(ckpt[key])
    if problem is not None:
        raise ExportError(f'{path}: its "{key}" {problem}; pass a BasicSR network checkpoint '
                          '(experiments/<name>/models/net_g_*.pth) or a file written by dupru-export.')
    return ckpt[key]


def load_into(network, path, param_key='params'):
    """Load a compressed (or ordinary) checkpoint into `network` strictly, with a clear error on a mismatch."""
    state = strip_module_prefix(network_state(_dense_checkpoint(path), path, param_key))
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ExportError(f'{path} does not fit {type(network).__name__}: {str(e).splitlines()[0]} ... (check the '
                          'architecture options: num_feat, num_block, upscale).') from None
    return network


def build_network(checkpoint, arch_opt=None, param_key='params_ema', option='--arch-opt'):
    """The network of a checkpoint (ordinary or compressed), built and loaded strictly, in eval mode: from the
    network_g section of the option file `arch_opt`, or an MSRResNet whose sizes are read from the weights.
    Returns (network, its network_g options); ExportError names the file and the fix. `option` is the flag the
    messages name for `arch_opt`."""
    state = strip_module_prefix(network_state(_dense_checkpoint(checkpoint), checkpoint, param_key))
    if arch_opt:
        import yaml
        try:
            with open(arch_opt) as f:
                net_opt = dict(yaml.safe_load(f)['network_g'])
        except (OSError, yaml.YAMLError, TypeError, KeyError, ValueError) as e:
            raise ExportError(f'{option} {arch_opt}: cannot read network_g from it ({type(e).__name__}: {e}); give '
                              'a BasicSR option YAML file with a network_g section.') from None
    else:
        try:
            net_opt = dict(infer_msrresnet_arch(state, checkpoint), type='MSRResNet')
        except ArchError as e:
            raise ExportError(f'{e} Pass {option} with the network_g options of this network.') from None
    from basicsr.utils.registry import ARCH_REGISTRY
    kwargs = dict(net_opt)
    try:
        net = ARCH_REGISTRY.get(kwargs.pop('type'))(**kwargs)
    except (KeyError, TypeError, ValueError) as e:
        raise ExportError(f'{option} {arch_opt}: network_g cannot be built ({type(e).__name__}: {e}); fix its type '
                          'and arguments.') from None
    try:
        net.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, AttributeError) as e:
        detail = ' '.join(str(e).split())[:300]
        raise ExportError(f'{checkpoint} does not fit the network of {arch_opt or "the inferred MSRResNet"} '
                          f'({detail}); give {option} with the network_g options it was trained with.') from None
    return net.eval(), net_opt


def export_onnx(checkpoint, onnx_path, arch_opt=None, param_key='params_ema', input_size=(1, 3, 32, 32)):
    """Export the dense network of a checkpoint (ordinary or compressed) to ONNX (needs the `onnx` package)."""
    check_output_path(onnx_path, '--onnx', [checkpoint] + ([arch_opt] if arch_opt else []))
    net, _ = build_network(checkpoint, arch_opt, param_key)
    try:  # checked after the network fits: a wrong --arch-opt is reported with or without onnx
        import onnx  # noqa: F401
    except ImportError:
        raise ExportError('ONNX export needs the onnx package: pip install "dupru-basicsr[onnx]".') from None
    torch.onnx.export(net, (torch.rand(*input_size), ), onnx_path, dynamo=False, input_names=['lq'],
                      output_names=['sr'], dynamic_axes={'lq': {0: 'batch', 2: 'height', 3: 'width'},
                                                         'sr': {0: 'batch', 2: 'height', 3: 'width'}})
    return onnx_path


def check_output_path(path, option, inputs=()):
    """`path` is a file name in an existing folder, and none of `inputs`: the command writes exactly the file it was
    given and never over what it reads. Raises ExportError."""
    if osp.isdir(path):
        raise ExportError(f'{option} {path} is a folder; give the name of the file to write (e.g. '
                          f'{osp.join(path, "small.pth")}).')
    folder = osp.dirname(path) or '.'
    if not osp.isdir(folder):
        raise ExportError(f'{option} {path}: the folder {folder} does not exist; create it first or write elsewhere.')
    for other in inputs:
        if osp.realpath(path) == osp.realpath(other) or (osp.exists(path) and osp.exists(other)
                                                         and osp.samefile(path, other)):
            raise ExportError(f'{option} {path} is the input file {other}; it would be overwritten. Write to another '
                              'file.')


def main(argv=None):
    parser = argparse.ArgumentParser(prog='dupru-export', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('checkpoint', help='a BasicSR checkpoint (e.g. net_g_round25_best.pth) or a compressed file')
    parser.add_argument('--out', help='compressed output file')
    parser.add_argument('--half', action='store_true', help='store the surviving values in fp16')
    parser.add_argument('--onnx', help='also (or only) export the dense network to this ONNX file')
    parser.add_argument('--mnn', help='also (or only) convert the network to this MNN file, with MNN\'s sparse '
                        'convolution kernels where its zeros speed them up (needs pip "dupru-basicsr[mnn]"; measured '
                        'in bench/README.md)')
    parser.add_argument('--mnn-dense', action='store_true', help='with --mnn: MNN\'s dense kernels only')
    parser.add_argument('--mnn-block', type=int, default=1, metavar='N',
                        help='with --mnn: store the sparse convolutions in blocks of N output channels, MNN\'s fast '
                        'sparse kernel (for a ticket pruned with pruning.granularity: oc_block<N>; default 1: '
                        'element-wise, MNN\'s slowest sparse kernel). It prints which convolutions MNN stored sparse')
    parser.add_argument('--arch-opt', help='option YAML with network_g (default: inferred for MSRResNet)')
    args = parser.parse_args(argv)
    if not args.out and not args.onnx and not args.mnn:
        parser.error('give --out (compressed checkpoint), --onnx and/or --mnn')
    if args.mnn_block < 1:
        parser.error(f'--mnn-block {args.mnn_block}: give a number of output channels >= 1 (e.g. 4)')
    if args.mnn_block > 1 and (not args.mnn or args.mnn_dense):
        parser.error('--mnn-block goes with --mnn (and without --mnn-dense): it sets how MNN stores sparse weights')
    from dupru_basicsr.deploy.mnn import MNNError
    from dupru_basicsr.utils.cli import run_command
    return run_command('dupru-export', lambda: _run(args), (ExportError, MNNError, OSError))


def _run(args):
    inputs = [args.checkpoint] + ([args.arch_opt] if args.arch_opt else [])
    if args.out:  # both outputs are checked before either is written
        check_output_path(args.out, '--out', inputs)
    if args.onnx:
        check_output_path(args.onnx, '--onnx', inputs + ([args.out] if args.out else []))
    if args.mnn:
        check_output_path(args.mnn, '--mnn', inputs + [p for p in (args.out, args.onnx) if p])
        from dupru_basicsr.deploy.mnn import require_mnn
        require_mnn()  # before anything is written
    if args.out:
        dense, small = export_compressed(args.checkpoint, args.out, args.half)
        print(f'{args.checkpoint}: {dense / 1e6:.3f} MB -> {args.out}: {small / 1e6:.3f} MB '
              f'({dense / small:.2f}x smaller{", fp16 values" if args.half else ""})')
    if args.onnx:
        export_onnx(args.checkpoint, args.onnx, args.arch_opt)
        print(f'ONNX: {args.onnx} ({osp.getsize(args.onnx) / 1e6:.3f} MB)')
    if args.mnn:
        fell_back = export_mnn(args.checkpoint, args.mnn, args.arch_opt, sparse=not args.mnn_dense,
                               onnx_path=args.onnx, block=args.mnn_block)
        print(f'MNN ({"dense" if args.mnn_dense else "sparse kernels where they are faster"}): {args.mnn} '
              f'({osp.getsize(args.mnn) / 1e6:.3f} MB)')
        if fell_back is not None:
            print(storage_summary(fell_back, args.mnn_block))
    return 0


def storage_summary(fell_back, block):
    """What `deploy.mnn.check_sparse_storage` found, for the user: every convolution with zeros stored sparse in
    blocks of `block`, or each one that was not and why."""
    unit = 'single weights' if block == 1 else f'blocks of {block} output channels'
    if not fell_back:
        return f'MNN stored every convolution that holds zeros sparse, in {unit}.'
    lines = [f'MNN did not store {len(fell_back)} convolution(s) holding zeros sparse in {unit} (they run MNN\'s dense '
             'kernel, no faster than before pruning):']
    lines += [f'  {module}: {why}' for module, why in fell_back]
    if block == 1:
        lines.append('  (a ticket pruned with pruning.granularity: oc_block4 and exported with --mnn-block 4 is what '
                     'MNN\'s fast sparse kernel needs; bench/README.md, "Sparse inference")')
    return '\n'.join(lines)


def export_mnn(checkpoint, mnn_path, arch_opt=None, sparse=True, onnx_path=None, block=1):
    """Convert the network of a checkpoint to MNN (through ONNX: `onnx_path` when already exported, else a temporary
    file); `sparse`: MNN's sparse kernels for the convolutions whose zeros make them faster, stored in blocks of
    `block` output channels (deploy.mnn). Returns, when `sparse`, the convolutions holding zeros that MNN did not
    store that way, [(module path, why)] (`deploy.mnn.check_sparse_storage`); else None."""
    import tempfile

    from dupru_basicsr.deploy.mnn import check_sparse_storage, convert_onnx
    with tempfile.TemporaryDirectory() as tmp:
        if onnx_path is None:
            onnx_path = export_onnx(checkpoint, osp.join(tmp, 'net.onnx'), arch_opt)
        convert_onnx(onnx_path, mnn_path, sparse, block)
    if not sparse:
        return None
    net, _ = build_network(checkpoint, arch_opt, 'params_ema')
    return check_sparse_storage(mnn_path, dict(net.state_dict()), block)


if __name__ == '__main__':
    sys.exit(main())
