"""The fp16 pass keeps I/O, normalisations and decision arithmetic in fp32 and stays close to fp32."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from edgesc.export.fp16 import convert_to_fp16


class _Toy(torch.nn.Module):
    """Linear → LayerNorm → per-layer If (dynamic depth) → top-k on a gate (budget) → power normalisation."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin, self.norm = torch.nn.Linear(16, 16), torch.nn.LayerNorm(16)
        self.gate, self.out = torch.nn.Linear(16, 1), torch.nn.Linear(16, 8)

    def forward(self, x: torch.Tensor, depth: torch.Tensor, budget: torch.Tensor):
        y = self.norm(self.lin(x))
        y = torch.cond(depth > 1, lambda y: y + torch.relu(self.lin(y)).softmax(-1) * 2, lambda y: y.clone(), (y,))
        k = torch.ceil(budget * x.shape[1]).to(torch.int64).item()
        torch._check(k >= 1)
        torch._check(k <= x.shape[1])
        idx = torch.topk(self.gate(y).squeeze(-1), k, dim=1).indices
        z = self.out(torch.gather(y, 1, idx.unsqueeze(-1).expand(-1, -1, 16)))
        return z / torch.sqrt((z * z).mean(dim=(1, 2), keepdim=True)), idx


@pytest.fixture(scope="module")
def toy() -> onnx.ModelProto:
    args = (torch.randn(2, 12, 16), torch.tensor(2), torch.tensor(0.5))
    return torch.onnx.export(_Toy().eval(), args, dynamo=True, opset_version=20, verbose=False).model_proto


def _run(m: onnx.ModelProto, feeds):
    return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)


def test_fp16_pass_types_and_parity(toy):
    m16, rep = convert_to_fp16(toy)
    assert rep.fp16_nodes > 0 and rep.casts_inserted > 0 and rep.weights_fp16 > 0
    for kept in ("LayerNormalization", "Softmax", "TopK", "ReduceMean", "Sqrt", "Ceil"):
        assert rep.kept_ops.get(kept), kept
    # graph I/O types unchanged
    assert [i.type.tensor_type.elem_type for i in m16.graph.input] == [i.type.tensor_type.elem_type for i in toy.graph.input]
    assert [o.type.tensor_type.elem_type for o in m16.graph.output] == [o.type.tensor_type.elem_type for o in toy.graph.output]
    # some weights really are stored in fp16
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in m16.graph.initializer)
    rng = np.random.default_rng(0)
    for depth in (1, 2):
        for budget in (0.25, 1.0):
            feeds = {"x": rng.standard_normal((2, 12, 16)).astype(np.float32), "depth": np.array(depth),
                     "budget": np.array(budget, np.float32)}
            a, b = _run(toy, feeds), _run(m16, feeds)
            assert b[0].dtype == np.float32
            assert np.abs(a[0] - b[0]).max() < 2e-2  # unit-power symbols: fp16 has ~3 significant digits
            assert (a[1] == b[1]).all()  # top-k decisions made on fp32 scores

