"""Every model family's tiny preset exports with parity, a contract manifest, metadata and an audit.

Exports are shared per session (one per family): the tiny presets export in seconds on an idle machine.
"""
from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
import torch

from edgesc.config import load_preset
from edgesc.export.audit import audit_model
from edgesc.export.manifest import FORMAT, sha256_file
from edgesc.export.onnx_export import ExportResult, export_model
from edgesc.models import build_model
from edgesc.train.checkpoint import save_checkpoint, weights_sha256

pytestmark = pytest.mark.slow
FAMILIES = ["recvit-tiny", "vit-tiny", "token-vit-tiny", "unified-tiny"]


@pytest.fixture(scope="session")
def exports(tmp_path_factory) -> dict[str, tuple[ExportResult, Path]]:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("families")
    out: dict[str, tuple[ExportResult, Path]] = {}
    for name in FAMILIES:
        cfg = load_preset(name)
        torch.manual_seed(0)
        ckpt = save_checkpoint(root / f"{name}.pt", cfg=cfg, model=build_model(cfg).eval())
        # unified-tiny has all five controls: it gets the full >= 20-setting validation; the others 6
        settings = 20 if name == "unified-tiny" else 6
        res = export_model(ckpt, root / name, validation_settings=settings,
                           targets=["jetson-orin-nano", "server-gpu"])
        out[name] = (res, ckpt)
    return out


@pytest.mark.parametrize("name", FAMILIES)
def test_family_exports_with_parity(exports, name):
    res, ckpt = exports[name]
    assert res.valid, res.validation["failures"]
    v = res.validation
    assert v["ok"] and v["batches"] == [1, 8] and v["tolerance"] == 1e-4
    for key, diff in v["max_abs_diff"].items():
        assert diff <= 1e-4, key
    assert {"encoder.symbols", "end_to_end." + res.manifest["graphs"]["decoder"]["outputs"][0]["name"]} <= set(
        v["max_abs_diff"])
    assert not any(v["integer_mismatches"].values())
    if name == "unified-tiny":
        assert v["settings"] >= 20


@pytest.mark.parametrize("name", FAMILIES)
def test_manifest_follows_the_contract(exports, name):
    res, ckpt = exports[name]
    cfg = load_preset(name)
    m = json.loads(res.manifest_path.read_text())
    assert res.manifest_path.name == "manifest.json" and m["format"] == FORMAT
    assert m["model"]["preset"] == name and m["model"]["num_patches"] == cfg.num_patches
    assert m["model"]["hash"] == weights_sha256(torch.load(ckpt, weights_only=True)["model"])
    assert m["export"]["opset"] == 20 and m["export"]["external_data"] is False
    assert set(m["export"]["versions"]) == {"edgesc", "torch", "onnx", "onnxruntime", "onnxscript"}
    from edgesc.models import control_names

    for side in ("encoder", "decoder"):
        g = m["graphs"][side]
        p = res.out_dir / g["file"]
        assert sha256_file(p) == g["sha256"]
        proto = onnx.load(str(p))
        props = {q.key: q.value for q in proto.metadata_props}
        assert props["edgesc.model_hash"] == m["model"]["hash"] and props["edgesc.model_id"] == m["model"]["id"]
        assert not list((res.out_dir).glob(f"{side}.onnx.data"))  # external_data=False
        names = [i["name"] for i in g["inputs"]]
        assert names == (["image"] if side == "encoder" else ["symbols", "token_index"]) + control_names(cfg, side)
        assert list(m["controls"][side]) == control_names(cfg, side)
        assert g["inputs"][0]["shape"][0] == "B"
    assert [o["name"] for o in m["graphs"]["encoder"]["outputs"]] == ["symbols", "token_index", "layer_tokens",
                                                                       "width_units"]
    assert m["graphs"]["decoder"]["inputs"][1]["shape"] == ["B", "K"]
    # exported weight bytes vs parameter bytes (no duplicated weights for dynamic width)
    assert m["export"]["weights"]["ratio_to_parameters"] <= 1.05
    assert set(m["audit"]["encoder"]) == {"10.3", "10.0", "11.0"} and m["audit"]["ok"]
    assert m["engines"] == {}
    for side in ("encoder", "decoder"):  # width chunking of the inference form (contract, Model API)
        f = m["flops"][side]
        assert f["width_chunks"] >= 1 and len(f["chunk"]) == 2


def test_runtime_reads_the_manifest(exports):
    rt = pytest.importorskip("edgesc_runtime.manifest", reason="edgesc_runtime is installed by scripts/setup.sh")
    for name in FAMILIES:
        res, _ = exports[name]
        man = rt.load_manifest(res.out_dir)
        assert set(man.graphs) == {"encoder", "decoder"}


def test_audit_of_dynamic_budget_graph(exports):
    res, _ = exports["token-vit-tiny"]
    r = audit_model(res.out_dir / "encoder.onnx", "10.3")
    assert r.ok
    assert any(w.op == "TopK" and "budget" in w.reason for w in r.warnings)  # run-time K from the budget input
    assert not audit_model(res.out_dir / "encoder.onnx", "8.5").ok  # run-time K refused before 8.6 (+ opset)


def test_fp16_export_of_a_tiny_family(tmp_path):
    """--precision fp16: graph I/O stays fp32, weights shrink, parity with the fp32 model within the fp16 tolerance."""
    torch.set_num_threads(1)
    cfg = load_preset("recvit-tiny")
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    res = export_model(model, tmp_path / "fp16", precision="fp16", validation_settings=6, targets=["server-gpu"])
    m = res.manifest
    assert res.valid, m["validation"]["failures"]
    assert m["validation"]["tolerance"] == 5e-2 and m["validation"]["integer_agreement"] >= 0.9
    assert all(i["dtype"] in ("float32", "int64") for g in m["graphs"].values() for i in g["inputs"] + g["outputs"])
    assert m["export"]["weights"]["ratio_to_parameters"] < 0.8  # most weights stored in fp16
    assert m["export"]["fp16"]["encoder"]["kept_ops"].get("LayerNormalization")
    assert m["audit"]["ok"]
