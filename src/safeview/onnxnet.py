"""A feed-forward CNN's ONNX graph as a differentiable torch module (Open-NSFW's ResNet-50).

Hand-written because onnx2torch, the library that does this in general, imports torchvision and
with it ``torch._dynamo`` (measured: 1.5 s of the 3 s SafeView took to import and load its
default model; bench/README.md, "Start-up"). A CNN exported from Caffe or TensorFlow uses a
handful of operators, interpreted here node by node: ``Conv`` as ``nn.Conv2d`` and ``Relu`` as
``nn.ReLU`` modules (FullGrad and the CAM methods hook modules), ``Gemm`` as ``nn.Linear``, and the
rest as functional ops. Any other operator, or an attribute these do not support, is a
:class:`~safeview.errors.ModelError` naming it, so a graph is converted exactly or not at all.

Parsing a graph (:func:`parse`) needs the ``onnx`` package, whose import costs 0.9 s here; the
module itself is built from the parse's plain values and tensors (a *spec*), which ``torch.save``
keeps and ``torch.load(weights_only=True)`` reads back, so a cached spec builds the module
without importing onnx (:func:`safeview.opennsfw.load_open_nsfw`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import ModelError

if TYPE_CHECKING:
    import onnx

#: the version of :func:`parse`'s output: a cached spec of another version is not read
SPEC_VERSION = 1
#: the operators :class:`OnnxCNN` interprets
OPERATORS = ("Conv", "Relu", "Add", "MaxPool", "AveragePool", "GlobalAveragePool", "Reshape", "Flatten", "MatMul", "Gemm")


def _attributes(node: onnx.NodeProto) -> dict[str, Any]:
    import onnx

    values = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    return {k: v.decode() if isinstance(v, bytes) else v for k, v in values.items()}


def _padding(node: onnx.NodeProto, attrs: dict[str, Any], spatial: int = 2) -> tuple[int, ...]:
    """ONNX ``pads`` (begin…, end…) as :func:`torch.nn.functional.pad`'s (last dim first) order."""
    if attrs.get("auto_pad", "NOTSET") != "NOTSET":
        raise ModelError(f"ONNX node {node.name or node.output[0]}: auto_pad={attrs['auto_pad']} is not supported")
    pads = list(attrs.get("pads", [0] * 2 * spatial))
    begin, end = pads[:spatial], pads[spatial:]
    return tuple(p for d in reversed(range(spatial)) for p in (begin[d], end[d]))


#: the layer kinds a spec names, and the torch modules they are built as
_LAYERS: dict[str, type[nn.Module]] = {"conv": nn.Conv2d, "linear": nn.Linear, "relu": nn.ReLU}


def parse(graph: onnx.GraphProto) -> dict[str, Any]:
    """``graph`` (whose single input is an NCHW float tensor) as an :class:`OnnxCNN` spec: its
    input and output names, its layers (kind and constructor arguments), its steps (operator,
    ONNX input names, ONNX output name, layer key or operator arguments), the buffer holding each
    constant an operator reads, and ``state``, every weight and constant as a tensor."""
    from onnx import numpy_helper

    if len(graph.input) != 1 or len(graph.output) != 1:
        raise ModelError(f"ONNX graph {graph.name!r}: one input and one output expected")
    constants = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    layers: dict[str, tuple[str, dict[str, Any]]] = {}
    buffers: dict[str, str] = {}  # ONNX name -> buffer attribute
    steps: list[tuple[str, list[str], str, Any]] = []
    state: dict[str, torch.Tensor] = {}

    def weight(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.array(array, np.float32))  # a layer's parameters are float32, as the modules'

    for index, node in enumerate(graph.node):
        if node.op_type not in OPERATORS:
            raise ModelError(f"ONNX operator {node.op_type} (node {node.name or node.output[0]}) is not supported; "
                             f"supported: {', '.join(OPERATORS)}")
        attrs, key = _attributes(node), f"{node.op_type.lower()}{index}"
        inputs = [name for name in node.input if name]
        argument: Any = None
        if node.op_type == "Conv":
            if inputs[1] not in constants or (len(inputs) > 2 and inputs[2] not in constants):
                raise ModelError(f"ONNX Conv {node.name or node.output[0]}: weights must be initialisers")
            conv_weight = constants[inputs[1]]
            bias = constants[inputs[2]] if len(inputs) > 2 else None
            layers[key] = ("conv", {
                "in_channels": int(conv_weight.shape[1] * attrs.get("group", 1)), "out_channels": int(conv_weight.shape[0]),
                "kernel_size": tuple(int(k) for k in conv_weight.shape[2:]), "stride": tuple(attrs.get("strides", (1, 1))),
                "dilation": tuple(attrs.get("dilations", (1, 1))), "groups": int(attrs.get("group", 1)), "bias": bias is not None,
            })
            state[f"layers.{key}.weight"] = weight(conv_weight)
            if bias is not None:
                state[f"layers.{key}.bias"] = weight(bias)
            inputs = inputs[:1]
            pad = _padding(node, attrs)
            argument = (key, pad if any(pad) else None)
        elif node.op_type == "Gemm":
            if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
                raise ModelError(f"ONNX Gemm {node.name or node.output[0]}: only transA=0, alpha=beta=1 is supported")
            matrix = constants[inputs[1]] if attrs.get("transB", 0) else constants[inputs[1]].T
            layers[key] = ("linear", {"in_features": int(matrix.shape[1]), "out_features": int(matrix.shape[0]), "bias": len(inputs) > 2})
            state[f"layers.{key}.weight"] = weight(matrix)
            if len(inputs) > 2:
                state[f"layers.{key}.bias"] = weight(constants[inputs[2]])
            inputs, argument = inputs[:1], key
        elif node.op_type == "Relu":
            layers[key], argument = ("relu", {}), key
        elif node.op_type in ("MaxPool", "AveragePool"):
            if attrs.get("ceil_mode", 0) or attrs.get("count_include_pad", 0) or any(d != 1 for d in attrs.get("dilations", [1])):
                raise ModelError(f"ONNX {node.op_type} {node.name or node.output[0]}: ceil_mode, count_include_pad and dilations are not supported")
            argument = (tuple(attrs["kernel_shape"]), tuple(attrs.get("strides", attrs["kernel_shape"])), _padding(node, attrs))
        elif node.op_type == "Reshape":
            argument = tuple(int(v) for v in constants[inputs[1]])
            inputs = inputs[:1]
        elif node.op_type == "Flatten":
            argument = attrs.get("axis", 1)
        for name in inputs:
            if name in constants and name not in buffers:
                buffers[name] = f"constant{len(buffers)}"
                state[buffers[name]] = torch.from_numpy(constants[name].copy())
        steps.append((node.op_type, inputs, node.output[0], argument))
    return {"input": graph.input[0].name, "output": graph.output[0].name, "layers": layers, "steps": steps,
            "constants": buffers, "state": state}


class OnnxCNN(nn.Module):
    """The module a :func:`parse` spec describes, returning the graph's single output; its weights
    are the spec's tensors (shared, not copied)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__()
        self.input_name, self.output_name = spec["input"], spec["output"]
        with torch.device("meta"):  # no initialisation: every weight comes from the spec
            self.layers = nn.ModuleDict({key: _LAYERS[kind](**kwargs) for key, (kind, kwargs) in spec["layers"].items()})
        self._constants: dict[str, str] = dict(spec["constants"])  # ONNX name -> buffer attribute
        for attr in self._constants.values():
            self.register_buffer(attr, torch.empty(spec["state"][attr].shape, device="meta"))
        #: (operator, ONNX input names, ONNX output name, module key or operator arguments)
        self._steps: list[tuple[str, list[str], str, Any]] = [tuple(step) for step in spec["steps"]]  # type: ignore[misc]
        self.load_state_dict(spec["state"], assign=True)
        # the step after which each value is no longer needed (intermediates are freed as in a plain module)
        self._last_use = {name: i for i, (_, inputs, _, _) in enumerate(self._steps) for name in inputs}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values: dict[str, torch.Tensor] = {self.input_name: x}
        values.update({name: getattr(self, attr) for name, attr in self._constants.items()})
        for i, (op, inputs, output, argument) in enumerate(self._steps):
            args = [values[name] for name in inputs]
            if op == "Conv":
                key, pad = argument
                values[output] = self.layers[key](F.pad(args[0], pad) if pad else args[0])
            elif op in ("Relu", "Gemm"):
                values[output] = self.layers[argument](args[0])
            elif op == "Add":
                values[output] = args[0] + args[1]
            elif op == "MatMul":
                values[output] = args[0] @ args[1]
            elif op == "MaxPool":
                kernel, stride, pad = argument
                padded = F.pad(args[0], pad, value=float("-inf")) if any(pad) else args[0]
                values[output] = F.max_pool2d(padded, kernel, stride)
            elif op == "AveragePool":
                kernel, stride, pad = argument
                if any(pad):  # count_include_pad=0: the mean over the real pixels only
                    ones = F.pad(torch.ones_like(args[0][:1, :1]), pad)
                    values[output] = F.avg_pool2d(F.pad(args[0], pad), kernel, stride) / F.avg_pool2d(ones, kernel, stride)
                else:
                    values[output] = F.avg_pool2d(args[0], kernel, stride)
            elif op == "GlobalAveragePool":
                values[output] = args[0].mean(dim=(2, 3), keepdim=True)
            elif op == "Reshape":
                shape = [args[0].shape[d] if s == 0 else s for d, s in enumerate(argument)]
                values[output] = args[0].reshape(shape)
            elif op == "Flatten":
                values[output] = args[0].reshape(int(np.prod(args[0].shape[:argument])), -1)
            for name in inputs:
                if self._last_use.get(name) == i and name != output and name not in self._constants:
                    values.pop(name, None)
        return values[self.output_name]


def convert(model: onnx.ModelProto) -> OnnxCNN:
    """``model``'s graph as an :class:`OnnxCNN` in eval mode."""
    return OnnxCNN(parse(model.graph)).eval()

