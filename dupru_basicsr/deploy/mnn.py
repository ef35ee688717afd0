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


def convert_onnx(onnx_path, mnn_path, sparse=True):
    """Convert an ONNX file to MNN's format; `sparse`: let the converter store convolutions whose zeros speed them
    up in MNN's sparse format (--detectSparseSpeedUp). Raises MNNError with the converter's last output lines."""
    require_mnn()
    cmd = [sys.executable, '-c', _CONVERT, '-f', 'ONNX', '--modelFile', onnx_path, '--MNNModel', mnn_path,
           '--bizCode', 'dupru'] + (['--detectSparseSpeedUp'] if sparse else [])
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0 or not osp.isfile(mnn_path) or 'Converted Success' not in result.stdout:
        tail = ' | '.join((result.stdout + result.stderr).strip().splitlines()[-4:])
        raise MNNError(f'MNN could not convert {onnx_path} (exit code {result.returncode}): {tail}')
    return mnn_path


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
