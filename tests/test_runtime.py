"""Prediction runtimes must compute the module's logits: folded copies are checked against the
module, and a module whose definition order misleads the folding is used as it is."""

from __future__ import annotations

import pickle

import numpy as np
import torch
from torch import nn

from safeview import nets
from safeview.runtime import TorchRuntime


def _batch(n: int = 3, size: int = 64) -> np.ndarray:
    return np.random.default_rng(0).normal(0, 1, (n, 3, size, size)).astype(np.float32)


def test_checkpoint_architectures_are_folded_and_give_the_same_logits():
    for arch in ("small", "resnet18"):
        torch.manual_seed(0)
        module = nets.build(arch, 2).eval()
        for m in module.modules():  # BatchNorm statistics that are not the identity
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
        runtime = TorchRuntime(module, (64, 64))
        batch = _batch()
        with torch.inference_mode():
            expected = module(torch.from_numpy(batch)).numpy()
        np.testing.assert_allclose(runtime(batch), expected, rtol=0, atol=1e-4)
        assert runtime._fast is not module
        assert not any(isinstance(m, nn.BatchNorm2d) for m in runtime._fast.modules())
        assert any(isinstance(m, nn.BatchNorm2d) for m in module.modules())  # the module itself is untouched


class _Misleading(nn.Module):
    """A conv and a BatchNorm defined one after the other, but the BatchNorm normalises the input."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.norm = nn.BatchNorm2d(3)
        self.head = nn.Linear(3, 2)

    def forward(self, x):
        return self.head((self.conv(x) + self.norm(x)).mean(dim=(2, 3)))


def test_a_module_the_folding_would_change_is_used_as_it_is():
    torch.manual_seed(0)
    module = _Misleading().eval()
    module.norm.running_mean.uniform_(-1, 1)
    module.norm.weight.data.fill_(2.0)
    runtime = TorchRuntime(module, (16, 16))
    batch = _batch(2, 16)
    with torch.inference_mode():
        expected = module(torch.from_numpy(batch)).numpy()
    np.testing.assert_allclose(runtime(batch), expected, rtol=0, atol=1e-6)
    assert runtime._fast is module


def test_runtimes_pickle_without_their_prepared_copy():
    module = nets.build("small", 2).eval()
    runtime = TorchRuntime(module, (32, 32))
    runtime(_batch(1, 32))
    copy = pickle.loads(pickle.dumps(runtime))
    assert copy._fast is None
    np.testing.assert_allclose(copy(_batch(1, 32)), runtime(_batch(1, 32)), atol=1e-5)


def test_onnx_sessions_do_not_busy_wait_between_runs():
    """Issue 18: spinning onnxruntime threads slow the torch attribution that CSE runs between
    predictions, so the sessions are created without spinning and with this process's thread cap."""
    from safeview.opennsfw import onnx_path
    from safeview.runtime import OnnxSession

    session = OnnxSession(onnx_path(), layout="NHWC", outputs="probabilities")._create()
    options = session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert 1 <= options.intra_op_num_threads <= torch.get_num_threads()
