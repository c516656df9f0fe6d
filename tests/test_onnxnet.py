"""The ONNX interpreter must compute what onnxruntime computes, for every operator it accepts, and
refuse the rest by name. Graphs are built in code with random weights."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from safeview.errors import ModelError
from safeview.onnxnet import OPERATORS, convert

RNG = np.random.default_rng(0)


def _init(name: str, *shape: int) -> onnx.TensorProto:
    return numpy_helper.from_array(RNG.normal(0, 0.3, shape).astype(np.float32), name)


def _model(nodes, inits, output_shape) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 33, 31])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, output_shape)], inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    return model


def _every_operator() -> onnx.ModelProto:
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[3, 3, 3, 3], strides=[2, 2], kernel_shape=[7, 7]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["m1"], kernel_shape=[3, 3], strides=[2, 2], pads=[0, 0, 1, 1]),  # Caffe's asymmetric pad
        helper.make_node("Conv", ["m1", "w2"], ["c2"], pads=[0, 1, 2, 1], group=2),  # asymmetric pads, groups, no bias
        helper.make_node("Add", ["c2", "m1"], ["a1"]),
        helper.make_node("AveragePool", ["a1"], ["p1"], kernel_shape=[2, 2], strides=[1, 1], pads=[1, 1, 0, 0]),
        helper.make_node("GlobalAveragePool", ["p1"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["h"], transB=1),
        helper.make_node("Reshape", ["h", "shape"], ["h2"]),
        helper.make_node("MatMul", ["h2", "w4"], ["mm"]),
        helper.make_node("Add", ["mm", "b4"], ["y"]),
    ]
    inits = [_init("w1", 4, 3, 7, 7), _init("b1", 4), _init("w2", 4, 2, 3, 3), _init("w3", 5, 4), _init("b3", 5),
             numpy_helper.from_array(np.array([-1, 5], np.int64), "shape"), _init("w4", 5, 2), _init("b4", 2)]
    return _model(nodes, inits, ["N", 2])


def test_every_operator_matches_onnxruntime():
    model = _every_operator()
    assert {n.op_type for n in model.graph.node} == set(OPERATORS)
    x = RNG.normal(0, 1, (3, 3, 33, 31)).astype(np.float32)
    (expected,) = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    module = convert(model)
    with torch.no_grad():
        got = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    # differentiable, with the modules attribution hooks onto
    assert sum(isinstance(m, torch.nn.Conv2d) for m in module.modules()) == 2
    assert sum(isinstance(m, torch.nn.ReLU) for m in module.modules()) == 1
    xt = torch.from_numpy(x).requires_grad_(True)
    module(xt)[:, 1].sum().backward()
    assert xt.grad is not None and float(xt.grad.abs().sum()) > 0


def test_unsupported_operators_and_attributes_are_refused_by_name():
    sigmoid = _model([helper.make_node("Sigmoid", ["x"], ["y"])], [], ["N", 3, 33, 31])
    with pytest.raises(ModelError, match="Sigmoid"):
        convert(sigmoid)
    same = _model([helper.make_node("Conv", ["x", "w"], ["y"], auto_pad="SAME_UPPER")], [_init("w", 2, 3, 3, 3)], ["N", 2, 33, 31])
    with pytest.raises(ModelError, match="auto_pad"):
        convert(same)
    ceil = _model([helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], ceil_mode=1)], [], ["N", 3, 17, 16])
    with pytest.raises(ModelError, match="ceil_mode"):
        convert(ceil)
