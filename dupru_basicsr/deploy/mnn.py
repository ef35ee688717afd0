"""MNN (Alibaba, Apache-2.0; pip `MNN`, extra `dupru-basicsr[mnn]`): ONNX -> .mnn conversion with or without its
sparse convolution kernels, and a small runner for timing and checking outputs.

MNN's converter (`--detectSparseSpeedUp`) stores a convolution in its sparse format when the zeros in its weights
make its sparse kernel faster on the target: unstructured zeros become a speed-up only there (PyTorch and ONNX
Runtime multiply zeros like any weight). Measured in bench/README.md (bench/bench_sparse_inference.py).

The converter is called through MNN's compiled `_tools.mnnconvert` in a child process: MNN's Python wrapper
`mnnconvert` also sends a usage log over the network and may call pip, which an export must not do.
"""
import os.path as osp
import subprocess
import sys

_CONVERT = 'import sys, MNN, _tools; _tools.mnnconvert(sys.argv)'


class MNNError(RuntimeError):
    """MNN missing or a conversion that failed; the message says what to do."""


def require_mnn():
    try:
        import MNN  # noqa: F401
    except ImportError:
        raise MNNError('the MNN runtime is not installed: pip install "dupru-basicsr[mnn]" (MNN, onnxruntime, '
                       'onnx).') from None


# MNN 3.6's converter stores a convolution sparse only above a zero share counted in blocks of output channels
# (tools/converter/source/common/AddSparseInfo.cpp): 0.6 for blocks of 1, 0.3 for larger blocks
SPARSE_THRESHOLD = {1: 0.6}
SPARSE_THRESHOLD_BLOCKS = 0.3


def _compression_params(block):
    """MNN's compression-params JSON that makes its converter store blocks of `block` output channels (there is no
    command-line flag for it; unknown fields are ignored silently, so the spelling matters)."""
    return {'version': '0.0.0', 'algo': [{'type': 'PRUNE', 'prune_params': {
        'type': 'SIMD_OC', 'simd_oc_pruner_params': {'oc_blocks': [int(block)]}}}]}


def _run_converter(args, what):
    result = subprocess.run([sys.executable, '-c', _CONVERT, *args], capture_output=True, text=True)
    if result.returncode != 0:
        tail = ' | '.join((result.stdout + result.stderr).strip().splitlines()[-4:])
        raise MNNError(f'MNN could not convert {what} (exit code {result.returncode}): {tail}')
    return result


def convert_onnx(onnx_path, mnn_path, sparse=True, block=1):
    """Convert an ONNX file to MNN's format; `sparse`: let the converter store convolutions whose zeros speed them
    up in MNN's sparse format (--detectSparseSpeedUp), in blocks of `block` output channels (a ticket pruned with
    granularity oc_block<block>). Raises MNNError with the converter's last output lines."""
    import json
    import tempfile
    require_mnn()
    args = ['-f', 'ONNX', '--modelFile', onnx_path, '--MNNModel', mnn_path, '--bizCode', 'dupru']
    with tempfile.TemporaryDirectory() as tmp:
        if sparse:
            args.append('--detectSparseSpeedUp')
            if block > 1:
                params = osp.join(tmp, 'compression.json')
                with open(params, 'w') as f:
                    json.dump(_compression_params(block), f)
                args += ['--compressionParamsFile', params]
        result = _run_converter(args, onnx_path)
    if not osp.isfile(mnn_path) or 'Converted Success' not in result.stdout:
        tail = ' | '.join((result.stdout + result.stderr).strip().splitlines()[-4:])
        raise MNNError(f'MNN could not convert {onnx_path}: {tail}')
    return mnn_path


def _module_path(op_name):
    """The PyTorch module path of an ONNX-exported op name: '/body/body.0/conv1/Conv_output_0' -> 'body.0.conv1'."""
    path = ''
    for part in op_name.strip('/').split('/')[:-1]:
        path = part if path and part.startswith(path + '.') or not path else f'{path}.{part}'
    return path


def stored_convolutions(mnn_path):
    """{module path: (sparse block of output channels, or None when stored dense)} of the convolutions in an .mnn
    file, read from the converter's JSON dump."""
    import json
    import tempfile
    require_mnn()
    with tempfile.TemporaryDirectory() as tmp:
        dump = osp.join(tmp, 'model.json')
        _run_converter(['-f', 'MNN', '--modelFile', mnn_path, '--JsonFile', dump], mnn_path)
        with open(dump) as f:
            model = json.load(f)
    stored = {}
    for op in model.get('oplists', []):
        if op.get('type') != 'Convolution':
            continue
        sparse = (op.get('main') or {}).get('sparseParameter')
        args = {a.get('key'): a.get('i') for a in (sparse or {}).get('args', [])}
        stored[_module_path(op.get('name', ''))] = args.get('sparseBlockOC') if sparse else None
    return stored


def check_sparse_storage(mnn_path, weights, block):
    """Which convolutions holding zeros MNN did not store sparse with `block`: [(module path, why)] for the
    {weight name: tensor} `weights` (e.g. a checkpoint's conv weights). Empty when every one is stored as asked."""
    stored = stored_convolutions(mnn_path)
    threshold = SPARSE_THRESHOLD.get(block, SPARSE_THRESHOLD_BLOCKS)
    fell_back = []
    for name, w in weights.items():
        module = name[:-len('.weight')] if name.endswith('.weight') else name
        if w.dim() != 4 or not bool((w == 0).any()):
            continue
        if module not in stored:
            fell_back.append((module, 'not found among the converted convolutions'))
            continue
        n = block if w.shape[0] % block == 0 else 1
        zero_blocks = float((w.reshape(w.shape[0] // n, n, -1) == 0).all(dim=1).float().mean())
        got = stored[module]
        if got == block:
            continue
        if got is None:
            why = (f'stored dense: {100 * zero_blocks:.1f}% of its blocks of {n} output channels are zero, '
                   f'MNN stores it sparse only above {100 * threshold:.0f}%' if zero_blocks <= threshold else
                   'stored dense by the converter (its sparse kernel is not faster there)')
        else:
            why = f'stored sparse in blocks of {got}, not {block}'
        fell_back.append((module, why))
    return fell_back


class MNNRunner:
    """One MNN session over a .mnn file for a fixed input shape (N, C, H, W), with `threads` CPU threads."""

    def __init__(self, mnn_path, shape, threads=1):
        require_mnn()
        import MNN
        self.MNN, self.shape = MNN, tuple(shape)
        self.interpreter = MNN.Interpreter(mnn_path)
        self.session = self.interpreter.createSession({'numThread': threads})
        self.input = self.interpreter.getSessionInput(self.session)
        self.interpreter.resizeTensor(self.input, self.shape)
        self.interpreter.resizeSession(self.session)

    def __call__(self, x):
        """Run on the float32 numpy array `x` of the session's shape; returns the output as a numpy array."""
        import numpy as np
        MNN = self.MNN
        self.input.copyFrom(MNN.Tensor(self.shape, MNN.Halide_Type_Float, np.ascontiguousarray(x, np.float32),
                                       MNN.Tensor_DimensionType_Caffe))
        self.interpreter.runSession(self.session)
        out = self.interpreter.getSessionOutput(self.session)
        shape = tuple(out.getShape())
        host = MNN.Tensor(shape, MNN.Halide_Type_Float, np.zeros(shape, np.float32), MNN.Tensor_DimensionType_Caffe)
        out.copyToHostTensor(host)
        return np.array(host.getData(), dtype=np.float32).reshape(shape)
