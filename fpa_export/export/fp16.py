"""Mixed float16 for an exported graph, written into its dtypes (TensorRT 11 builds strongly typed
networks only: the precision of every tensor must be explicit in the ONNX file).

The rule is small on purpose: products with a weight (MatMul, Gemm, Conv, ConvTranspose with a constant
float operand: the LSTM and `kvb` matmuls, the U-Net convolutions — nearly all the FLOPs) run in
float16; every other op stays float32, with explicit Cast nodes at the boundaries. So softmax, the
delta rule and its canvas accumulation (products of two activations), the LSTM cell state, the
normalisations and tanh all keep float32, and the graph's inputs and outputs keep their dtypes.
"""
from __future__ import annotations

from collections import defaultdict

from fpa_export.common.errors import FpaError

FP16_OPS = ("MatMul", "Gemm", "Conv", "ConvTranspose")


def to_mixed_fp16(model):
    """A copy of the float32 ONNX `model` with its weight products in float16 (see the module doc)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    if any(attr.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
           for node in graph.node for attr in node.attribute):
        raise FpaError("fp16 conversion needs a graph without control flow (use the unrolled LSTM)")
    floats = (TensorProto.FLOAT, TensorProto.FLOAT16)
    dtype = _element_types(model)
    half = _half_nodes(graph, dtype)

    consumers = defaultdict(set)
    for index, node in enumerate(graph.node):
        for name in node.input:
            consumers[name].add(index)
    for init in graph.initializer:  # weights used only by float16 products are stored as float16
        if init.data_type == TensorProto.FLOAT and consumers[init.name] and consumers[init.name] <= half:
            init.CopyFrom(numpy_helper.from_array(
                numpy_helper.to_array(init).astype("float16"), init.name))
    current = {init.name: init.data_type for init in graph.initializer}
    current.update({vi.name: dtype[vi.name] for vi in graph.input})

    graph_outputs = {out.name for out in graph.output}
    nodes, casts = [], {}
    for index, node in enumerate(graph.node):
        want = TensorProto.FLOAT16 if index in half else TensorProto.FLOAT
        for k, name in enumerate(node.input):
            if name and current.get(name) in floats and current[name] != want:
                if (name, want) not in casts:
                    cast = f"{name}__{'fp16' if want == TensorProto.FLOAT16 else 'fp32'}"
                    nodes.append(helper.make_node("Cast", [name], [cast], to=want, name=cast))
                    casts[name, want] = cast
                node.input[k] = casts[name, want]
        nodes.append(node)
        for k, name in enumerate(node.output):
            if dtype.get(name) not in floats:
                continue
            current[name] = want
            if name in graph_outputs and want != dtype[name]:  # keep the public output dtype
                node.output[k] = f"{name}__fp16_out"  # not a Cast name above
                nodes.append(helper.make_node("Cast", [node.output[k]], [name], to=dtype[name]))
                current[name] = dtype[name]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]  # stale dtypes; shape inference recomputes them
    return model


def _element_types(model) -> dict[str, int]:
    """Element type of every tensor of the graph, from ONNX shape inference."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    types = {init.name: init.data_type for init in graph.initializer}
    for info in list(graph.value_info) + list(graph.input) + list(graph.output):
        if info.type.HasField("tensor_type"):
            types[info.name] = info.type.tensor_type.elem_type
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    types[node.output[0]] = attr.t.data_type
    missing = [out for node in graph.node for out in node.output if out and out not in types]
    if missing:
        raise FpaError(f"fp16 conversion: shape inference left {len(missing)} tensor type(s) unknown "
                         f"(first: {missing[0]})")
    return types


def _half_nodes(graph, dtype: dict[str, int]) -> set[int]:
    """Indices of the weight products: FP16_OPS nodes with a constant float input."""
    from onnx import TensorProto

    constant = {init.name for init in graph.initializer}
    half = set()
    for index, node in enumerate(graph.node):
        inputs = [name for name in node.input if name]
        if node.op_type == "Constant" or (inputs and all(name in constant for name in inputs)):
            constant.update(node.output)
        if node.op_type in FP16_OPS and any(
                name in constant and dtype.get(name) == TensorProto.FLOAT for name in inputs):
            half.add(index)
    return half
