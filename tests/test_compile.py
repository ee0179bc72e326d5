"""edgesc compile without a GPU: targets, profiles, precision/version logic, cache keys, trtexec, CLI exits."""
from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from edgesc.errors import ExportError
from edgesc.export import compile as comp
from edgesc.export.manifest import FORMAT, describe_io, sha256_file, write_manifest
from edgesc.export.targets import (TargetError, eval_expr, list_targets, load_target, manifest_variables,
                                   resolve_profile)

TARGETS = {"cpu", "server-gpu", "jetson-orin-nano", "jetson-orin-nx", "jetson-agx-orin"}


def _graph(inputs, outputs, path: Path) -> None:
    nodes = [helper.make_node("Identity", [i.name], [o.name]) for i, o in zip(inputs, outputs)]
    m = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs), opset_imports=[helper.make_opsetid("", 20)])
    onnx.save(m, str(path))


@pytest.fixture()
def export_dir(tmp_path: Path) -> Path:
    """A fake export: encoder image[B,3,32,32] + depth (int64 0-d); decoder symbols[B,K,S,2] + token_index[B,K]."""
    f, i64 = TensorProto.FLOAT, TensorProto.INT64
    enc_in = [helper.make_tensor_value_info("image", f, ["B", 3, 32, 32]), helper.make_tensor_value_info("depth", i64, [])]
    enc_out = [helper.make_tensor_value_info("x", f, ["B", 3, 32, 32]), helper.make_tensor_value_info("d", i64, [])]
    dec_in = [helper.make_tensor_value_info("symbols", f, ["B", "K", "S", 2]),
              helper.make_tensor_value_info("token_index", i64, ["B", "K"])]
    dec_out = [helper.make_tensor_value_info("y", f, ["B", "K", "S", 2]), helper.make_tensor_value_info("t", i64, ["B", "K"])]
    _graph(enc_in, enc_out, tmp_path / "encoder.onnx")
    _graph(dec_in, dec_out, tmp_path / "decoder.onnx")
    graphs = {}
    for g in ("encoder", "decoder"):
        p = tmp_path / f"{g}.onnx"
        graphs[g] = {"file": p.name, "sha256": sha256_file(p), **describe_io(onnx.load(str(p)))}
    manifest = {
        "format": FORMAT,
        "model": {"id": "t", "num_patches": 16, "class_token": True, "symbols_per_token": [8, 16], "encoder_layers": 4,
                  "decoder_layers": 4, "image_size": 32, "channels": 3},
        "graphs": graphs,
        "controls": {"encoder": {"depth": {"dtype": "int64", "min": 1, "max": 4, "default": 4},
                                 "budget": {"dtype": "float32", "min": 0.0625, "max": 1.0, "default": 1.0}},
                     "decoder": {}},
        "export": {"precision": "fp32", "batch": "dynamic"},
        "engines": {},
    }
    write_manifest(tmp_path, manifest)
    return tmp_path


def test_shipped_targets_load():
    assert TARGETS <= set(list_targets())
    for name in TARGETS:
        t = load_target(name)
        assert t.name == name and t.precision in ("fp32", "fp16")
        if t.runtime == "tensorrt":
            assert t.tensorrt and t.workspace_mb > 0
            assert {"peak_tflops_fp32", "memory_bandwidth_gbs", "source"} <= set(t.datasheet)
    for name in ("jetson-orin-nano", "jetson-orin-nx", "jetson-agx-orin"):
        assert load_target(name).tensorrt == ("10.3",)  # JetPack 6
    assert load_target("server-gpu").tensorrt_majors == (10, 11)


def test_unknown_target_lists_known_ones():
    with pytest.raises(TargetError) as e:
        load_target("jetson-nano-2gb")
    assert "known:" in str(e.value) and "jetson-orin-nano" in str(e.value)


def test_bad_target_files(tmp_path: Path):
    p = tmp_path / "t.toml"
    p.write_text('name="t"\nruntime="tensorrt"\nprecision="fp8"\nworkspace_mb=1\ntensorrt=["10.3"]\n[profile.dims]\nB={min=1,opt=1,max=2}\n')
    with pytest.raises(TargetError, match="precision"):
        load_target(p)
    p.write_text('name="t"\nruntime="tensorrt"\nprecision="fp16"\nworkspace_mb=1\ntensorrt=["10.3"]\n[profile.dims]\nB={min=1,opt="import os",max=2}\n')
    with pytest.raises(TargetError, match="cannot parse|may only use"):
        load_target(p)
    p.write_text('name="t"\nruntime="tensorrt"\nprecision="fp16"\nworkspace_mb=1\ntensorrt=["10.3"]\nbogus=1\n[profile.dims]\nB={min=1,opt=1,max=2}\n')
    with pytest.raises(TargetError, match="unknown key"):
        load_target(p)


def test_expressions():
    v = {"M": 16, "CLS": 1, "M_tx": 17}
    assert eval_expr("M_tx", v) == 17 and eval_expr("ceil(M/3)+CLS", v) == 7 and eval_expr(4, v) == 4
    with pytest.raises(TargetError, match="unknown name"):
        eval_expr("Q+1", v)
    with pytest.raises(TargetError):
        eval_expr("__import__('os')", v)


def test_profile_shapes_from_target_and_manifest(export_dir: Path):
    manifest = json.loads((export_dir / "manifest.json").read_text())
    var = manifest_variables(manifest)
    assert var["M_tx"] == 17 and var["S_min"] == 8 and var["S_max"] == 16
    t = load_target("jetson-orin-nano")
    dims = resolve_profile(t, manifest)
    assert dims["K"] == (0, 17, 17) and dims["S"] == (8, 16, 16) and dims["B"] == (1, 1, 8)
    enc = comp.input_profiles(manifest, "encoder", t)
    assert enc == {"image": ((1, 3, 32, 32), (1, 3, 32, 32), (8, 3, 32, 32))}
    dec = comp.input_profiles(manifest, "decoder", t)
    assert dec["symbols"] == ((1, 0, 8, 2), (1, 17, 16, 2), (8, 17, 16, 2))
    assert dec["token_index"] == ((1, 0), (1, 17), (8, 17))
    manifest["export"]["batch"] = 4  # static batch pins B
    assert comp.input_profiles(manifest, "encoder", t)["image"][0][0] == 4
    assert comp.control_value_ranges(manifest, "encoder") == {"depth": (1, 4, 4)}  # floats can't be shape tensors


def test_missing_dim_in_target(export_dir: Path, tmp_path: Path):
    manifest = json.loads((export_dir / "manifest.json").read_text())
    p = tmp_path / "nok.toml"
    p.write_text('name="nok"\nruntime="tensorrt"\nprecision="fp16"\nworkspace_mb=1\ntensorrt=["10.3"]\n[profile.dims]\nB={min=1,opt=1,max=2}\n')
    with pytest.raises(TargetError, match="no profile for dimension 'K'"):
        comp.input_profiles(manifest, "decoder", load_target(p))


def test_precision_logic():
    assert comp.precision_plan("fp32", "fp16", "10.3", "x")[:3] == ("fp16", False, True)  # TRT 10: builder flag
    assert comp.precision_plan("fp16", "fp16", "10.3", "x")[:3] == ("fp16", True, False)  # typed graph
    assert comp.precision_plan("fp32", "fp32", "10.3", "x")[:3] == ("fp32", False, False)
    assert comp.precision_plan("fp16", "fp16", "11.0", "x")[:3] == ("fp16", True, False)
    with pytest.raises(ExportError, match="strongly typed.*--precision fp16"):
        comp.precision_plan("fp32", "fp16", "11.0", "server-gpu")
    with pytest.raises(ExportError, match="not supported"):
        comp.precision_plan("fp32", "fp16", "8.6", "x")


def test_version_expectations():
    nano, server = load_target("jetson-orin-nano"), load_target("server-gpu")
    assert comp.check_version_expected("10.3", nano) == []
    assert comp.check_version_expected("10.7", nano)  # warns
    assert comp.check_version_expected("10.7", server) == [] and comp.check_version_expected("11.2", server) == []
    assert comp.check_version_expected("12.0", server)


def test_cache_key_covers_every_component():
    gpu = comp.GpuInfo("Orin", "8.7")
    prof = {"shapes": {"image": {"min": [1], "opt": [1], "max": [8]}}}
    base = comp.cache_key("a" * 64, "10.3", gpu, "fp16", prof)
    assert base == comp.cache_key("a" * 64, "10.3", gpu, "fp16", prof)
    variants = [comp.cache_key("b" * 64, "10.3", gpu, "fp16", prof),
                comp.cache_key("a" * 64, "10.4", gpu, "fp16", prof),
                comp.cache_key("a" * 64, "10.3", comp.GpuInfo("RTX 4090", "8.9"), "fp16", prof),
                comp.cache_key("a" * 64, "10.3", comp.GpuInfo("Orin", "8.6"), "fp16", prof),
                comp.cache_key("a" * 64, "10.3", gpu, "fp32", prof),
                comp.cache_key("a" * 64, "10.3", gpu, "fp16", {"shapes": {"image": {"min": [1], "opt": [2], "max": [8]}}})]
    assert len({base, *variants}) == 7


def test_plan_and_trtexec_command(export_dir: Path):
    t = load_target("jetson-orin-nano")
    manifest, plans = comp.plan_builds(export_dir, t, "10.3")
    by = {p.graph: p for p in plans}
    enc = by["encoder"]
    assert enc.fp16_flag and not enc.strongly_typed and enc.precision == "fp16" and enc.workspace_mb == 1024
    cmd = comp.trtexec_command(enc, Path("e.engine"), Path("t.cache"))
    assert "--minShapes=image:1x3x32x32" in cmd and "--maxShapes=image:8x3x32x32" in cmd and "--fp16" in cmd
    assert "--memPoolSize=workspace:1024M" in cmd and "--timingCacheFile=t.cache" in cmd and "depth in [1, 4]" in cmd
    dec_cmd = comp.trtexec_command(by["decoder"], Path("d.engine"), Path("t.cache"))
    assert "symbols:1x0x8x2,token_index:1x0" in dec_cmd
    server = load_target("server-gpu")
    with pytest.raises(ExportError, match="--precision fp16"):
        comp.plan_builds(export_dir, server, "11.1")
    with pytest.raises(TargetError, match="no engine"):
        comp.plan_builds(export_dir, load_target("cpu"), "10.3")


def test_changed_graph_is_refused(export_dir: Path):
    (export_dir / "decoder.onnx").write_bytes((export_dir / "decoder.onnx").read_bytes() + b"\0")
    with pytest.raises(ExportError, match="sha256"):
        comp.plan_builds(export_dir, load_target("jetson-orin-nano"), "10.3")


def test_compile_without_tensorrt_is_unavailable(export_dir: Path, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_trt(name, *a, **k):
        if name == "tensorrt":
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_trt)
    with pytest.raises(comp.CompileUnavailable, match="TensorRT is not installed"):
        comp.compile_export(export_dir, "jetson-orin-nano")
    with pytest.raises(TargetError, match="unknown target"):
        comp.compile_export(export_dir, "nope")


def test_compile_cli_exit_codes(export_dir: Path, monkeypatch):
    from typer.testing import CliRunner

    import edgesc.cli  # noqa: F401 - registers every command
    from edgesc.cli.app import app

    monkeypatch.setattr(comp, "tensorrt_module", lambda: (_ for _ in ()).throw(comp.CompileUnavailable("TensorRT is not installed")))
    r = CliRunner().invoke(app, ["compile", str(export_dir), "--target", "jetson-orin-nano"])
    assert r.exit_code == 1 and "TensorRT is not installed" in r.output
    r = CliRunner().invoke(app, ["compile", str(export_dir), "--target", "nope"])
    assert r.exit_code == 2 and "known:" in r.output
    r = CliRunner().invoke(app, ["compile", str(export_dir / "missing"), "--target", "jetson-orin-nano"])
    assert r.exit_code == 2 and "not found" in r.output


@pytest.mark.gpu
def test_real_engine_build(export_dir: Path):
    pytest.importorskip("tensorrt", reason="needs TensorRT and an NVIDIA GPU (none on this machine)")
    rep = comp.compile_export(export_dir, "server-gpu")
    assert set(rep.engines) == {"encoder", "decoder"}
    rep2 = comp.compile_export(export_dir, "server-gpu")
    assert set(rep2.reused) == {"encoder", "decoder"}
