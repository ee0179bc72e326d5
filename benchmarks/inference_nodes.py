"""Before/after benchmark of the inference form's exported encoder: ONNX node count and ONNX Runtime latency.

Graphs, all exported with the dynamo exporter (opset 20, dynamic batch), for each preset (random weights: latency
does not depend on training; at initialisation the stop-score bias is −3, so no token halts before the ``depth``
cap and the cap alone sets depth — checked from ``layer_tokens``):

- ``before``: the inference form of git revision ``--baseline`` (``edgesc/models/inference.py`` loaded from git),
  controls as graph inputs;
- ``after``: the current inference form (``model.encoder.inference(width_chunks=C)``), one graph per ``--chunks``
  value, controls as graph inputs;
- ``static``: a dense graph with every control fixed at export time, built for each measured setting with exactly
  the work the dynamic graph executes there (layers run, tokens, heads and MLP groups executed, same code paths as
  a plain ViT layer): the best a per-setting static export could do.

Each graph and setting is timed with single-threaded ORT sessions at batch 1 and 8, interleaved round-robin
(``--rounds`` rounds of ``--iters`` calls, order shuffled per round) so that load changes on this shared machine
hit all graphs alike; medians over rounds. Ratios are taken within a round set, side by side.

    .venv/bin/python benchmarks/inference_nodes.py                       # → benchmarks/results/inference_nodes.json
    .venv/bin/python benchmarks/inference_nodes.py --presets recvit --chunks 4 2 --profile
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import copy
import importlib.util
import io
import json
import logging
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import types
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgesc.config import load_preset  # noqa: E402
from edgesc.models import build_model  # noqa: E402
from edgesc.models.coder import normalize_power  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
BASELINE = "23e54a4"  # last commit with the per-unit (8 units per component) inference form


def load_baseline(rev: str) -> types.ModuleType:
    """``edgesc/models/inference.py`` at git revision ``rev`` as a module of the package ``edgesc.models``."""
    src = subprocess.check_output(["git", "-C", str(ROOT), "show", f"{rev}:edgesc/models/inference.py"], text=True)
    name = "edgesc.models._inference_baseline"
    mod = types.ModuleType(name)
    mod.__package__ = "edgesc.models"
    sys.modules[name] = mod
    exec(compile(src, f"{rev}:edgesc/models/inference.py", "exec"), mod.__dict__)  # noqa: S102 - our own file
    return mod


class _DenseBlock(nn.Module):
    """A plain pre-LN transformer layer with ``heads`` heads of ``head_dim`` and an MLP of ``hidden`` neurons."""

    def __init__(self, e: int, heads: int, head_dim: int, hidden: int) -> None:
        super().__init__()
        self.heads, self.dh = heads, head_dim
        self.ln1, self.ln2 = nn.LayerNorm(e), nn.LayerNorm(e)
        self.qkv, self.proj = nn.Linear(e, 3 * heads * head_dim), nn.Linear(heads * head_dim, e)
        self.fc1, self.fc2 = nn.Linear(e, hidden), nn.Linear(hidden, e)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q, k, v = self.qkv(self.ln1(x)).reshape(b, t, 3 * self.heads, self.dh).transpose(1, 2).split(self.heads, 1)
        att = torch.softmax((q * self.dh ** -0.5) @ k.transpose(-1, -2), dim=-1) @ v
        x = x + self.proj(att.transpose(1, 2).reshape(b, t, self.heads * self.dh))
        return x + self.fc2(torch.relu(self.fc1(self.ln2(x))))


class StaticEncoder(nn.Module):
    """Dense encoder doing exactly the executed work of one setting (``layers`` layers of ``heads``/``groups``
    units, top-``k`` token selection at ``select_at``), every control a constant: the static reference."""

    def __init__(self, model: nn.Module, layers: int, heads: int, groups: int, k: int | None) -> None:
        super().__init__()
        cfg = model.cfg
        enc = model.encoder
        self.embed = copy.deepcopy(enc.embed)
        self.m, self.k = cfg.num_patches, k
        self.select_at = cfg.tokens.select_at if cfg.tokens.enabled else 0
        self.special = nn.Parameter(torch.zeros(1, cfg.specials, cfg.embed_dim)) if cfg.specials else None
        self.score = nn.Linear(cfg.embed_dim, 1)
        units = -(-layers // cfg.encoder.recursions)
        self.rec = cfg.encoder.recursions
        self.blocks = nn.ModuleList(_DenseBlock(cfg.embed_dim, heads, cfg.head_dim, groups * cfg.group_dim)
                                    for _ in range(units))
        self.layers = layers
        self.norm = nn.LayerNorm(cfg.embed_dim)
        self.coder = copy.deepcopy(enc.coder.levels[0])
        self.s = cfg.coder.symbols[0]

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.embed(image)
        b = x.shape[0]
        if self.special is not None:
            x = torch.cat([x, self.special.expand(b, -1, -1)], dim=1)
        for layer in range(self.layers):
            if self.k is not None and layer == self.select_at:
                idx = torch.sort(torch.topk(self.score(x[:, : self.m]).squeeze(-1), self.k, dim=1).indices, 1).values
                x = torch.cat([torch.gather(x[:, : self.m], 1, idx[..., None].expand(-1, -1, x.shape[-1])),
                               x[:, self.m :]], dim=1)
            x = self.blocks[layer // self.rec](x)
        z = self.norm(x)[:, : (self.k or self.m)]
        return normalize_power(self.coder(z).reshape(b, z.shape[1], self.s, 2))


def _export(module: nn.Module, kwargs: dict[str, torch.Tensor], cfg) -> onnx.ModelProto:
    image = torch.rand(2, cfg.channels, cfg.image_size, cfg.image_size)
    b = torch.export.Dim("B", min=1, max=1024)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        prog = torch.onnx.export(module, (image,), kwargs=kwargs or None, dynamo=True, opset_version=20,
                                 dynamic_shapes={"image": {0: b}, **{k: None for k in kwargs}}, external_data=False,
                                 optimize=True)
    return prog.model_proto


def _cached(cache: Path, tag: str, make) -> onnx.ModelProto:  # noqa: ANN001
    path = cache / f"{tag}.onnx"
    if path.is_file():
        return onnx.load(str(path))
    t = time.time()
    proto = make()
    onnx.save(proto, str(path))
    print(f"  exported {tag}: {len(proto.graph.node)} nodes in {time.time() - t:.0f} s", flush=True)
    return proto


def _session(proto: onnx.ModelProto, profile: str | None = None) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    if profile:
        so.enable_profiling = True
        so.profile_file_prefix = profile
    return ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _feeds(names: list[str], setting: dict[str, Any], image: np.ndarray) -> dict[str, np.ndarray]:
    out = {"image": image}
    for n in names:
        out[n] = np.array(setting[n], dtype=np.int64 if n in ("depth", "ratio") else np.float32)
    return out


def _op_profile(sess: ort.InferenceSession, feeds: dict[str, np.ndarray], runs: int) -> dict[str, Any]:
    for _ in range(runs):
        sess.run(None, feeds)
    path = sess.end_profiling()
    by: dict[str, float] = collections.defaultdict(float)
    cnt: collections.Counter = collections.Counter()
    for e in json.loads(Path(path).read_text()):
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            by[e["args"]["op_name"]] += e["dur"]
            cnt[e["args"]["op_name"]] += 1
    Path(path).unlink()
    total = sum(by.values()) / runs
    top = sorted(by.items(), key=lambda kv: -kv[1])[:8]
    return {"kernel_us_per_run": round(total, 1),
            "top_ops": {op: {"us_per_run": round(d / runs, 1), "nodes_run": cnt[op] // runs} for op, d in top}}


def preset_config(preset: str, units: int | None):
    cfg = load_preset(preset)
    return cfg if units is None else cfg.replace(encoder={"units": units, "recursions": cfg.encoder.recursions})


def measure(preset: str, units: int | None, settings: dict[str, dict[str, Any]], chunks: list[int],
            baseline: types.ModuleType, cache: Path, rounds: int, iters: int, profile: bool) -> dict[str, Any]:
    cfg = preset_config(preset, units)
    preset = preset if units is None else f"{preset}-u{units}"
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    graphs: dict[str, tuple[onnx.ModelProto, list[str]]] = {}
    dyn: dict[str, nn.Module] = {"before": baseline.InferenceEncoder(model.encoder).eval()}
    for c in chunks:
        dyn[f"after-C{c}"] = model.encoder.inference(width_chunks=c).eval()
    names = dyn["before"].control_names
    ex = {n: torch.tensor(v) for n, v in settings["full"].items() if n in names}
    for tag, mod in dyn.items():
        graphs[tag] = (_cached(cache, f"{preset}-{tag}", lambda m=mod: _export(m, ex, cfg)), names)
    executed: dict[str, dict[str, Any]] = {}
    image1 = torch.rand(1, cfg.channels, cfg.image_size, cfg.image_size)
    for sname, st in settings.items():
        with torch.no_grad():
            kw = {n: torch.tensor(st[n]) for n in names}
            _, idx, lt, wu = dyn[f"after-C{chunks[0]}"](image1, **kw)
            _, _, lt0, wu0 = dyn["before"](image1, **kw)
        layers = int((lt[0] > 0).sum())
        assert bool((lt[0, :layers] > 0).all()), "tokens halted before the cap: latency would depend on the image"
        heads, groups = (int(v) for v in wu[0])
        k = idx.shape[1] if cfg.tokens.enabled else None
        executed[sname] = {"layers": layers, "tokens_after_selection": idx.shape[1], "width_units_after": [heads, groups],
                           "width_units_before": [int(v) for v in wu0[0]]}
        static = StaticEncoder(model, layers, heads, groups, k).eval()
        tag = f"{preset}-static-L{layers}-h{heads}-g{groups}-k{k}"
        graphs[f"static@{sname}"] = (_cached(cache, tag, lambda s=static: _export(s, {}, cfg)), [])
    sessions = {tag: _session(p) for tag, (p, _) in graphs.items()}
    rng = np.random.default_rng(0)
    res: dict[str, Any] = {"preset": preset, "nodes": {t: len(p.graph.node) for t, (p, _) in graphs.items()},
                           "executed": executed, "latency_ms": {}, "ratios": {}}
    for b in (1, 8):
        image = rng.random((b, cfg.channels, cfg.image_size, cfg.image_size), dtype=np.float32)
        points = []  # (graph tag, setting name)
        for sname in settings:
            points += [(t, sname) for t in dyn] + [(f"static@{sname}", sname)]
        feeds = {pt: _feeds(graphs[pt[0]][1], settings[pt[1]], image) for pt in points}
        times: dict[tuple[str, str], list[float]] = {pt: [] for pt in points}
        for pt in points:  # warm-up
            for _ in range(3):
                sessions[pt[0]].run(None, feeds[pt])
        for _ in range(rounds):
            for j in rng.permutation(len(points)):
                pt = points[j]
                t = time.perf_counter()
                for _ in range(iters):
                    sessions[pt[0]].run(None, feeds[pt])
                times[pt].append((time.perf_counter() - t) / iters * 1e3)
        med = {pt: statistics.median(v) for pt, v in times.items()}
        res["latency_ms"][f"batch{b}"] = {f"{t}@{s}" if not t.startswith("static") else t: round(v, 3)
                                          for (t, s), v in med.items()}
        ratios = {}
        for sname in settings:
            st = med[(f"static@{sname}", sname)]
            for t in dyn:
                ratios[f"{t}/static@{sname}"] = round(med[(t, sname)] / st, 3)
            for t in dyn:
                if t != "before":
                    ratios[f"{t}/before@{sname}"] = round(med[(t, sname)] / med[("before", sname)], 3)
        for t in dyn:
            for sname in settings:
                if sname != "full":
                    ratios[f"{t}:{sname}/full"] = round(med[(t, sname)] / med[(t, "full")], 3)
        res["ratios"][f"batch{b}"] = ratios
        print(f"[{preset}] batch {b}: " + ", ".join(f"{k} {v:.2f} ms" for k, v in res["latency_ms"][f"batch{b}"].items()),
              flush=True)
    if profile:
        res["profile_batch1_full"] = {}
        image = rng.random((1, cfg.channels, cfg.image_size, cfg.image_size), dtype=np.float32)
        for t in list(dyn) + ["static@full"]:
            prof = _session(graphs[t][0], profile=str(cache / f"prof-{preset}-{t}"))
            res["profile_batch1_full"][t] = _op_profile(prof, _feeds(graphs[t][1], settings["full"], image), 20)
    return res


def default_settings(cfg) -> dict[str, dict[str, Any]]:
    full = {"budget": 1.0, "depth": cfg.encoder.layers, "width": 1.0, "snr_db": 10.0, "ratio": 0}
    out = {"full": full}
    if cfg.tokens.enabled:
        out["budget0.25"] = {**full, "budget": 0.25}
        out["low"] = {**full, "budget": 0.25, "depth": 2, "width": 0.25}
    else:
        out["depth4-width0.5"] = {**full, "depth": 4, "width": 0.5}
        out["low"] = {**full, "depth": 2, "width": 0.25}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--presets", nargs="+", default=["recvit", "unified"])
    ap.add_argument("--chunks", nargs="+", type=int, default=[4], help="width_chunks values of the 'after' graphs")
    ap.add_argument("--baseline", default=BASELINE, help="git revision of the 'before' inference form")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--cache", type=Path, default=None, help="keep exported graphs here (default: a temp dir)")
    ap.add_argument("--profile", action="store_true", help="also record ORT per-op-type kernel time (batch 1, full)")
    ap.add_argument("--units", type=int, default=None, help="smoke test: encoder blocks (RTUs) instead of the preset's")
    ap.add_argument("--out", type=Path, default=RESULTS / "inference_nodes.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    baseline = load_baseline(args.baseline)
    out: dict[str, Any] = {"baseline": args.baseline, "rounds": args.rounds, "iters": args.iters,
                           "machine": {"platform": platform.platform(), "cpu_count": __import__("os").cpu_count(),
                                       "onnxruntime": ort.__version__, "torch": torch.__version__},
                           "note": "ORT CPU, 1 thread; medians over interleaved rounds on a shared machine: compare "
                                   "ratios, not absolute times", "presets": {}}
    with tempfile.TemporaryDirectory() as tmp:
        cache = args.cache or Path(tmp)
        cache.mkdir(parents=True, exist_ok=True)
        for preset in args.presets:
            cfg = preset_config(preset, args.units)
            out["presets"][preset] = measure(preset, args.units, default_settings(cfg), args.chunks, baseline, cache,
                                             args.rounds, args.iters, args.profile)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
