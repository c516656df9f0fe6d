"""Prediction runtimes must compute the module's logits: exports and folded copies are checked
against the module, a module whose definition order misleads the folding is used as it is, and an
on-disk export that is corrupt, stale or forged is never served."""

from __future__ import annotations

import pickle

import numpy as np
import torch
from torch import nn

from safeview import nets, runtime as runtime_module
from safeview.runtime import OnnxSession, TorchRuntime, cache_dir


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
        batch = _batch(3, 48)  # not the classifier's size: the folded copy serves
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
    batch = _batch(2, 24)
    with torch.inference_mode():
        expected = module(torch.from_numpy(batch)).numpy()
    np.testing.assert_allclose(runtime(batch), expected, rtol=0, atol=1e-6)
    assert runtime._fast is module
    np.testing.assert_allclose(runtime(batch[:, :, :16, :16]), module(torch.from_numpy(batch[:, :, :16, :16])).detach().numpy(), atol=1e-5)
    assert isinstance(runtime._onnx, OnnxSession)  # the export computes the unfolded graph


def test_runtimes_pickle_without_their_prepared_copy():
    module = nets.build("small", 2).eval()
    runtime = TorchRuntime(module, (32, 32))
    runtime(_batch(1, 32))
    copy = pickle.loads(pickle.dumps(runtime))
    assert copy._fast is None and copy._onnx is None and not copy._exported
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


def _expected(module, batch):
    with torch.inference_mode():
        return module(torch.from_numpy(batch)).numpy()


def test_the_export_serves_the_classifiers_size_and_is_cached(tmp_path, monkeypatch):
    """Issue 18: onnxruntime on the module's export is the faster runtime at batch 1; exporting
    takes seconds, so the export is kept on disk and a second load does not export again."""
    monkeypatch.setenv("SAFEVIEW_CACHE_DIR", str(tmp_path / "cache"))
    torch.manual_seed(0)
    module = nets.build("small", 2).eval()
    batch = _batch(2, 32)
    first = TorchRuntime(module, (32, 32))
    np.testing.assert_allclose(first(batch), _expected(module, batch), rtol=0, atol=1e-4)
    assert isinstance(first._onnx, OnnxSession) and first._fast is None  # no folded copy was needed
    (stored,) = (tmp_path / "cache").glob("*.onnx")
    assert stored.stat().st_mode & 0o077 == 0  # private to this user

    def refuse(*_):
        raise AssertionError("exported again although the cache holds this module's export")

    monkeypatch.setattr(runtime_module, "_export", refuse)
    second = TorchRuntime(module, (32, 32))
    np.testing.assert_allclose(second(batch), _expected(module, batch), rtol=0, atol=1e-4)
    assert second._onnx is not None and second._onnx.source == str(stored)


def test_changed_weights_are_a_different_cache_entry(tmp_path, monkeypatch):
    monkeypatch.setenv("SAFEVIEW_CACHE_DIR", str(tmp_path))
    module = nets.build("small", 2).eval()
    key = runtime_module._module_key(module, (32, 32))
    with torch.no_grad():
        next(module.parameters()).view(-1)[0] += 1e-6
    assert runtime_module._module_key(module, (32, 32)) != key
    assert runtime_module._module_key(module, (48, 48)) != runtime_module._module_key(module, (32, 32))


def test_a_corrupt_or_forged_cached_export_is_never_served(tmp_path, monkeypatch):
    """Whatever sits in the cache under a module's key (garbage, or the export of other weights,
    which is what an attacker with write access would plant) is checked against the module and
    replaced by a fresh export."""
    monkeypatch.setenv("SAFEVIEW_CACHE_DIR", str(tmp_path))
    torch.manual_seed(0)
    module, other = nets.build("small", 2).eval(), nets.build("small", 2).eval()
    batch = _batch(2, 32)
    path = tmp_path / f"{runtime_module._module_key(module, (32, 32))}.onnx"
    for planted in (b"not an onnx graph", runtime_module._export(other, (32, 32))):
        path.write_bytes(planted)
        runtime = TorchRuntime(module, (32, 32))
        np.testing.assert_allclose(runtime(batch), _expected(module, batch), rtol=0, atol=1e-4)
        assert path.read_bytes() != planted  # the fresh export replaced it
        np.testing.assert_allclose(OnnxSession(path)(batch), _expected(module, batch), rtol=0, atol=1e-4)


def test_without_an_export_or_a_writable_cache_the_torch_copy_serves(tmp_path, monkeypatch):
    """An operator the exporter lacks, or a cache that cannot be written, costs speed, never an
    error or a wrong score."""
    torch.manual_seed(0)
    module = nets.build("small", 2).eval()
    batch = _batch(2, 32)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("SAFEVIEW_CACHE_DIR", str(blocker / "cache"))  # under a file: not creatable
    runtime = TorchRuntime(module, (32, 32))
    np.testing.assert_allclose(runtime(batch), _expected(module, batch), rtol=0, atol=1e-4)
    assert runtime._onnx is not None

    def unsupported(*_):
        raise RuntimeError("an operator the exporter does not know")

    monkeypatch.setattr(runtime_module, "_export", unsupported)
    monkeypatch.setenv("SAFEVIEW_CACHE_DIR", "")
    assert cache_dir() is None
    runtime = TorchRuntime(module, (32, 32))
    np.testing.assert_allclose(runtime(batch), _expected(module, batch), rtol=0, atol=1e-4)
    assert runtime._onnx is None and runtime._fast is not None
    assert list(tmp_path.iterdir()) == [blocker]  # nothing was written anywhere
