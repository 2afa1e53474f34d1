"""The issue-13 instruments at tiny sizes: peer comparison, per-phase memory, scaling grid, GPU check (no timings)."""

from __future__ import annotations

import csv
import json
import math
import re
from unittest import mock

import pytest
import torch
from torch import nn

from egsbench.benchmark import (
    bench_compile,
    bench_edge_merge,
    bench_engine,
    bench_layout,
    bench_memory,
    bench_peer,
    bench_scaling,
    gpu_check,
    memory,
    profile_step,
    timing,
)
from egsbench.benchmark.bench_methods import make_method, method_step
from egsbench.benchmark.memory import MemoryProbe
from egsbench.testing import aten_calls, nested_equal


@pytest.fixture
def one_thread():
    """Tiny steps run fastest on one thread, and a loaded machine does not thrash; restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


needs_xautodl = pytest.mark.skipif(not bench_peer.peer_available(), reason="xautodl is not installed")


@needs_xautodl
def test_peer_networks_share_the_macro_structure():
    """Same cells, reductions, channels and edges as xautodl at N = 2 (6 cells: reductions at cells 2 and 4)."""
    ours = make_method("darts_1st", channels=4, layers=6).ctx.model
    peer = bench_peer._xautodl_nets(channels=4, layers=6)["xautodl_darts"]
    assert [c.reduction for c in ours.cells] == [c.reduction for c in peer.cells]
    assert [i for i, c in enumerate(ours.cells) if c.reduction] == [2, 4]
    assert [len(c.edges) for c in ours.cells] == [c.num_edges for c in peer.cells] == [14] * 6
    assert ours.classifier.in_features == peer.classifier.in_features == 4 * 4 * 4
    assert ours.stem[0].out_channels == peer.stem[0].out_channels == 12


@needs_xautodl
def test_peer_benchmark_reports_every_ratio(tmp_path, one_thread, capsys):
    out = tmp_path / "peer.json"
    argv = ["--channels", "2", "--layers", "3", "--batch", "2", "--rounds", "1", "--samples", "2", "--per-op"]
    assert bench_peer.main([*argv, "--json", str(out)]) == 0
    result = json.loads(out.read_text())["results"][0]
    assert list(result["per_op"]) == ["max_pool_3x3", "avg_pool_3x3", "skip_connect", *bench_peer.PEER_OP_NAMES]
    for r in result["per_op"].values():
        assert r["ours_s"] > 0 and r["xautodl_s"] > 0 and r["ratio"] == r["ours_s"] / r["xautodl_s"]
    assert result["config"]["repeats"] == dict.fromkeys(bench_peer.SAMPLED, 2)  # the sampled steps: mean of 2
    assert set(result["median_s"]) == {
        "ours_darts",
        "xautodl_darts",
        "ours_gdas",
        "xautodl_gdas",
        "egs_m1",
        "egs_m7",
        "ours_darts_nchw",
        "xautodl_darts_cl",
    }
    assert result["config"]["memory_format"] == "channels_last"  # ours, by default here
    assert result["parameters"]["ours_darts_nchw"] == result["parameters"]["ours_darts"]  # the layout only
    assert set(result["ratios"]) == set(bench_peer.TARGETS)
    egs_m7 = result["ratios"]["egs_m7/ours_darts"]
    assert 0 < egs_m7["active_fraction"] <= 1 and 0 < egs_m7["active_mac_fraction"] <= 1
    assert result["parameters"]["xautodl_darts"] > result["parameters"]["ours_darts"]  # xautodl's conv biases
    hardware = result["hardware"]
    assert hardware["variant"] == "ours_darts" and hardware["flops"] > 0 and hardware["matmul_flops_per_s"] > 0
    assert hardware["flops_per_s"] == pytest.approx(hardware["flops"] / result["median_s"]["ours_darts"])
    out = capsys.readouterr().out
    assert "differences between the two supernets" in out and "GFLOP per step (counted)" in out
    assert "every edge one op" in out and "common draws" in out


def test_interleaved_timing_repeats_a_variant_and_reports_the_mean_call():
    """time_interleaved's repeats: a variant runs n times per round (after one warm-up call) and its round time
    is the mean call (a clock that each call advances by its variant's cost), so a variant repeated reads as one
    call of it; n < 1 is refused."""
    clock = {"now": 0.0}
    calls = {"once": 0, "thrice": 0}

    def variant(name: str, seconds: float):
        def run() -> None:
            calls[name] += 1
            clock["now"] += seconds

        return run

    variants = {"once": variant("once", 1.0), "thrice": variant("thrice", 2.0)}
    with mock.patch.object(timing.time, "perf_counter", lambda: clock["now"]):
        result = timing.time_interleaved(variants, 2, "once", {}, repeats={"thrice": 3, "absent": 5})
    assert calls == {"once": 1 + 2, "thrice": 1 + 2 * 3}
    assert result["config"]["repeats"] == {"thrice": 3}
    assert result["times_s"] == {"once": [1.0, 1.0], "thrice": [2.0, 2.0]}  # the mean call, not the sum of three
    assert result["calls_s"] == {"thrice": [2.0] * 6}  # each repeated call, timed on its own
    assert result["ratio_to_once"]["thrice"] == 2.0
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        timing.time_interleaved(variants, 1, "once", {}, repeats={"once": 0})


def test_sampling_interval_is_the_delta_method_on_the_means():
    """Means 2 (calls 1 and 3: se 1) over 4 (one value: exact): ratio 0.5, se 0.5 x 1/2, 95 % 0.5 -+ 0.49; the
    verdict places that interval below, across or above a target."""
    out = bench_peer.sampling_interval([1.0, 3.0], [4.0], 0.995)
    assert out["mean_ratio"] == 0.5 and out["calls"] == [2, 1]
    assert out["ci95"] == pytest.approx([0.5 - 1.96 * 0.25, 0.5 + 1.96 * 0.25])
    assert out["verdict"] == "below"
    assert bench_peer.sampling_interval([1.0, 3.0], [4.0], 0.3)["verdict"] == "across"
    assert bench_peer.sampling_interval([1.0, 3.0], [4.0], 0.005)["verdict"] == "above"
    both = bench_peer.sampling_interval([1.0, 3.0], [2.0, 6.0])  # relative errors add in quadrature
    assert both["mean_ratio"] == 0.5 and "verdict" not in both
    assert both["ci95"][1] - 0.5 == pytest.approx(1.96 * 0.5 * math.hypot(0.5, 0.5))


def test_a_paired_interval_keeps_the_common_spread_out():
    """Calls that cost in proportion on common draws: the paired ratio has no error, the unpaired one does."""
    den = [0.5, 0.8, 0.6, 0.7]
    num = [0.4 * d for d in den]
    paired = bench_peer.sampling_interval(num, den, 0.41, paired=True)
    assert paired["ci95"] == [pytest.approx(0.4)] * 2 and paired["verdict"] == "below" and paired["paired"]
    unpaired = bench_peer.sampling_interval(num, den, 0.41)
    assert unpaired["ci95"][0] < 0.4 - 0.02 and unpaired["verdict"] == "across"
    with pytest.raises(ValueError, match="as many calls"):
        bench_peer.sampling_interval(num, den[:3], paired=True)


def test_common_draws_hand_each_variant_the_same_draws_in_order():
    made = []

    def sample(generator):
        made.append(int(torch.randint(0, 10**9, (), generator=generator)))
        return {"normal": torch.tensor(made[-1])}

    a, b = timing.common_draws(sample), timing.common_draws(sample)
    first = [int(a()["normal"]) for _ in range(3)]  # a round: one variant's calls, then the other's
    assert len(set(first)) == 3  # a new draw on each call
    assert [int(b()["normal"]) for _ in range(3)] == first  # call i of each: seed i, the same draw
    assert int(b()["normal"]) == int(a()["normal"]) not in first and len(made) == 8  # each call draws afresh


@needs_xautodl
def test_forced_alphas_make_xautodls_gdas_run_our_draw(one_thread):
    """Our GDAS draw, set as xautodl's alphas, is what its forward runs: on every edge of every cell, the op in
    the drawn column and no other (a hook on each edge's candidate modules; the edge orders agree)."""
    ours = make_method("gdas", channels=2, layers=3)
    peer = bench_peer._xautodl_nets(channels=2, layers=3)["xautodl_gdas"]
    to_peer = bench_peer.peer_columns(ours.ctx.space.ops)
    torch.manual_seed(1)
    draw = {t: to_peer[w.detach().argmax(-1)] for t, w in ours.sample().items()}
    ran = set()
    for c, cell in enumerate(peer.cells):
        for key, candidates in cell.edges.items():
            for k, op in enumerate(candidates._ops):  # xautodl MixedOp: its candidate modules
                op.register_forward_hook(lambda *_, at=(c, cell.edge2index[key], k): ran.add(at))
    bench_peer.force_peer_ops(peer, draw)
    peer(torch.randn(2, 3, 32, 32))
    kinds = ["reduce" if cell.reduction else "normal" for cell in peer.cells]
    assert ran == {(c, e, int(draw[t][e])) for c, t in enumerate(kinds) for e in range(len(draw[t]))}
    assert len({int(k) for t in draw for k in draw[t]}) > 1  # the draw is not one op everywhere


def test_peer_ratios_give_the_sampled_ones_an_interval():
    medians = dict.fromkeys(["ours_darts", "xautodl_darts", "xautodl_darts_cl", "egs_m7"], 1.0)
    medians |= {"ours_gdas": 0.4, "xautodl_gdas": 1.0, "egs_m1": 0.1}
    samples = {name: [m, m] for name, m in medians.items()} | {"ours_gdas": [0.3, 0.5], "egs_m1": [0.1, 0.1, 0.1]}
    out = bench_peer.ratios(medians, 0.5, 0.4, samples)
    assert "ci95" not in out["ours_darts/xautodl_darts"] and "ci95" not in out["ours_cl/xautodl_darts_cl"]
    assert out["ours_gdas/xautodl_gdas"]["ci95"][0] < 0.4 < out["ours_gdas/xautodl_gdas"]["ci95"][1]
    assert out["ours_gdas/xautodl_gdas"]["verdict"] == "across"
    assert out["egs_m1/ours_darts"]["ci95"] == [pytest.approx(0.1)] * 2  # no spread on either side
    assert out["egs_m1/ours_darts"]["verdict"] == "below" and out["egs_m1/ours_darts"]["calls"] == [3, 2]
    assert out["ours_gdas/xautodl_gdas"]["paired"] and not out["egs_m1/ours_darts"]["paired"]


@needs_xautodl
@pytest.mark.parametrize(
    ("op", "runs"),
    [("sep_conv_3x3", {("depthwise", 3, 1)}), ("dil_conv_5x5", {("depthwise", 5, 2)}), ("max_pool_3x3", {"max"})],
)
def test_per_op_steps_run_the_forced_op_on_both_supernets(one_thread, op, runs):
    """Each per-op step runs that op and no other candidate on ours and on xautodl's GDAS supernet (seen by a
    global forward hook: depthwise convolutions by kernel and dilation, pools by kind)."""
    variants, ops = bench_peer.per_op_variants(channels=2, layers=3, batch=2)
    assert ops == ["max_pool_3x3", "avg_pool_3x3", "skip_connect", *bench_peer.PEER_OP_NAMES]
    seen = {"ours": set(), "xautodl": set()}
    side = "ours"

    def hook(module, args, output):
        if isinstance(module, nn.Conv2d) and module.groups > 1 and module.groups == module.in_channels:
            seen[side].add(("depthwise", module.kernel_size[0], module.dilation[0]))
        elif isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
            seen[side].add("max" if isinstance(module, nn.MaxPool2d) else "avg")

    handle = nn.modules.module.register_module_forward_hook(hook)
    try:
        for side in seen:  # noqa: B007 (the hook reads it)
            variants[f"{side}:{op}"]()
    finally:
        handle.remove()
    assert seen == {"ours": runs, "xautodl": runs}


def test_peer_rejects_a_cell_count_xautodl_cannot_build():
    if not bench_peer.peer_available():
        with pytest.raises(ModuleNotFoundError, match="pip install --no-deps xautodl"):
            bench_peer._xautodl_nets(4, 6)
    else:
        with pytest.raises(ValueError, match="3N cells"):
            bench_peer._xautodl_nets(4, 5)


@pytest.fixture(params=["default", "psutil"])
def cpu_probe(request, monkeypatch) -> MemoryProbe:
    """The CPU probe this machine picks (VmHWM on Linux), and the psutil sampler Windows and macOS get."""
    if request.param == "psutil":
        monkeypatch.setattr(memory, "_can_reset_hwm", lambda: False)
    probe = MemoryProbe(torch.device("cpu"))
    assert request.param == "default" or probe.how.startswith("psutil"), probe.how
    return probe


def test_memory_probe_sees_an_allocation_inside_its_phase(cpu_probe):
    probe = cpu_probe
    probe.start()
    block = torch.ones(64 * 2**20 // 4)  # 64 MB, touched
    start, peak = probe.stop()
    del block
    assert peak - start > 48 * 2**20, probe.how


def test_memory_probe_phases_do_not_inherit_an_earlier_peak(cpu_probe):
    probe = cpu_probe
    probe.start()
    block = torch.ones(256 * 2**20 // 4)  # 256 MB, touched, then freed
    _, first_peak = probe.stop()
    del block
    probe.start()
    small = torch.ones(2**20)  # 4 MB
    start, second_peak = probe.stop()
    del small
    assert second_peak < first_peak - 128 * 2**20, (probe.how, first_peak, second_peak)


def test_layout_benchmark_times_both_layouts_and_records_each_networks_width(tmp_path, one_thread):
    out = tmp_path / "layout.csv"
    argv = ["--channels", "4", "--layers", "3", "--batch", "2", "--rounds", "1", "--precision", "bf16"]
    assert bench_layout.main([*argv, "--networks", "gdas", "final", "--csv", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [r["network"] for r in rows] == ["gdas", "final"] and {r["dtype"] for r in rows} == {"bfloat16"}
    assert all(r["width"] == "4" for r in rows)  # the narrowest conv input past the image: C
    assert all(float(r["contiguous_s"]) > 0 and float(r["channels_last_s"]) > 0 for r in rows)
    bench_layout.main([*argv, "--networks", "final", "--csv", str(out)])
    assert len(list(csv.DictReader(out.open()))) == 3  # appended under the one header


def test_the_hardware_line_counts_a_steps_flops_and_measures_matmul():
    conv, x = torch.nn.Conv2d(4, 8, 3, padding=1, bias=False), torch.randn(2, 4, 8, 8)

    def step():
        conv.zero_grad(set_to_none=True)
        conv(x).sum().backward()

    forward = 2 * (2 * 8 * 8) * 8 * (4 * 3 * 3)  # 2 FLOPs per multiply-add: B*H*W outputs x C_out x C_in*k*k
    info = bench_peer.hardware("conv", step, 0.5, "cpu")
    assert info["flops"] == 2 * forward  # forward and the weight gradient (x needs none)
    assert info["flops_per_s"] == info["flops"] / 0.5 and info["matmul_flops_per_s"] > 0
    assert info["line"].startswith("conv: 0.00 GFLOP per step (counted) at 0.500 s")


def test_memory_benchmark_measures_each_method_in_its_own_process(tmp_path):
    out = tmp_path / "mem.json"
    argv = ["--channels", "2", "--layers", "3", "--batch", "2", "--threads", "1", "--json", str(out)]
    assert bench_memory.main([*argv, "--methods", "egs_m1", "darts_1st", "--memory-format", "channels_last"]) == 0
    data = json.loads(out.read_text())
    assert [r["method"] for r in data["results"]] == ["egs_m1", "darts_1st"]
    assert {r["memory_format"] for r in data["results"]} == {"channels_last"}  # reached the worker processes
    for r in data["results"]:
        assert set(r["phases"]) == set(bench_memory.PHASES)
        assert all(p["peak_mb"] >= p["start_mb"] > 0 for p in r["phases"].values())
    assert data["table"]["egs_m1/darts_1st"]["target"] == pytest.approx(1 / 3)


def test_memory_benchmark_rejects_an_unknown_method():
    with pytest.raises(ValueError, match="darts_3rd.*darts_1st"):
        bench_memory.measure_in_subprocess("darts_3rd", 2, 3, 2)


def test_scaling_grid_varies_one_axis_at_a_time():
    points = bench_scaling.grid((8, 5, 16), {"batch": [8, 32], "channels": [4], "layers": [8]})
    assert [axis for axis, _ in points] == ["batch", "batch", "channels", "layers"]
    assert points[2][1] == {"channels": 4, "layers": 5, "batch": 16}


def test_scaling_writes_csv_plot_and_machine(tmp_path):
    argv = [
        "--base",
        "2,3,2",
        "--batches",
        "2",
        "--channels",
        "--cells",
        "--methods",
        "egs_m1",
        "--time-steps",
        "1",
        "--threads",
        "1",
        "--out",
        str(tmp_path),
        "--name",
        "tiny",
    ]
    assert bench_scaling.main(argv) == 0
    rows = list(csv.DictReader((tmp_path / "tiny.csv").open()))
    assert [(r["method"], r["axis"], r["batch"]) for r in rows] == [("egs_m1", "batch", "2")]
    assert all(float(r["step_s"]) > 0 and float(r["step_increment_mb"]) >= 0 for r in rows)
    assert (tmp_path / "tiny.png").stat().st_size > 0
    sidecar = json.loads((tmp_path / "tiny.json").read_text())
    assert {"platform", "cpu_count", "torch_threads", "git_sha"} <= set(sidecar["machine"])


def test_scaling_rejects_a_malformed_base(tmp_path):
    with pytest.raises(SystemExit):
        bench_scaling.main(["--base", "8,5", "--out", str(tmp_path)])


def test_gpu_check_smoke_on_cpu(tmp_path, one_thread, capsys):
    out = tmp_path / "gpu.json"
    assert gpu_check.main(["--steps", "2", "--small", "--device", "cpu", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    both_layouts = {m + suffix for m in gpu_check.SEARCH_METHODS for suffix in ("", "-cl")}
    assert set(result["search"]) == both_layouts and set(result["eval"]) == {"fp32"}
    assert result["search"]["egs_m7"]["total_steps"] == 50 * 391  # 50 epochs x ceil(25k / 64)
    assert result["eval"]["fp32"]["total_steps"] == 600 * 521  # 600 epochs x ceil(50k / 96)
    assert all(e["met"] is None for e in result["search"].values())  # small sizes: no verdict
    assert "not comparable" in capsys.readouterr().out


def test_gpu_check_compiles_the_network_as_the_runner_does(tmp_path, one_thread, monkeypatch):
    compiled = []

    def eager(net):  # dynamo's eager backend: the compile path without inductor's C++ build
        compiled.append(type(net).__name__)
        return gpu_check_compile(net, backend="eager")

    gpu_check_compile = gpu_check.compile_network
    monkeypatch.setattr(gpu_check, "compile_network", eager)
    sizes = {"channels": 4, "layers": 3, "batch": 2}
    with torch._dynamo.config.patch(error_on_recompile=True):  # the drop-path probability changes every step
        assert gpu_check.time_eval("fp32-cl", sizes, 3, 1, torch.device("cpu"), compile=True) > 0
    torch._dynamo.reset()
    assert compiled == ["NetworkCIFAR"]


def test_gpu_check_rejects_an_unknown_eval_mode():
    with pytest.raises(ValueError, match="fp16.*fp32"):
        gpu_check.time_eval("fp16", {"channels": 4, "layers": 3, "batch": 2}, 1, 0, torch.device("cpu"))


def test_compile_benchmark_counts_a_sampling_methods_graphs_per_distinct_sample(tmp_path, one_thread, capsys):
    """Why EGS and GDAS keep an eager supernet: every distinct sampled op set is a graph of its own (dynamo's
    graph-only backend here; one GDAS step samples two sets, one per forward, below the recompile limit)."""
    argv = ["--methods", "gdas", "--sample-steps", "1", "--batch", "4", "--memory-format", "contiguous"]
    assert bench_compile.main([*argv, "--json", str(tmp_path / "c.json")]) == 0
    out = capsys.readouterr().out
    assert "gdas       not compiled: 1 steps sampled 2 distinct active-op sets; dynamo made 2 graphs" in out
    [saved] = json.loads((tmp_path / "c.json").read_text())["results"]
    assert saved["variant"] == "gdas" and saved["distinct_active_sets"] == saved["graphs"] == 2
    assert saved["graphs"] < saved["recompile_limit"]


def test_edge_merge_benchmark_times_forms_that_compute_the_same_block(tmp_path, one_thread):
    out = tmp_path / "merge.txt"
    argv = ["--batch", "2", "--channels", "4", "--edges", "3", "--rounds", "1", "--formats", "contiguous"]
    assert bench_edge_merge.main([*argv, "--out", str(out)]) == 0
    [row] = out.read_text().splitlines()[2:]
    assert row.split()[:3] == ["2", "3", "contiguous"] and len(row.split()) == 3 + 2 * len(bench_edge_merge.FORMS)
    forms, params = bench_edge_merge.edge_block_forms(2, 4, 3, "channels_last")
    assert max(bench_edge_merge.same_numbers(forms, params).values()) < 1e-4
    kernels = [p for p in params if p.dim() == 4 and p.shape[1] == 1]  # the edges' depthwise kernels
    forms["grouped"] = _with_kernel_scaled(forms["grouped"], kernels[1])  # a merge that changed one edge's numbers
    with pytest.raises(AssertionError, match="grouped differs from the separate ops"):
        bench_edge_merge.same_numbers(forms, params)


def test_engine_benchmark_switches_each_shortcut_off_and_checks_the_numbers(tmp_path, one_thread):
    out = tmp_path / "engine.txt"
    argv = ["--batch", "2", "--channels", "4", "--layers", "3", "--rounds", "1", "--kernels", "--out", str(out)]
    assert bench_engine.main(argv) == 0
    lines = out.read_text().splitlines()
    cells, check_note = lines[2].split("(")
    assert cells.split()[0] == "2" and len(cells.split()) == 1 + 2 * (len(bench_engine.SHORTCUTS) + 2)
    assert check_note.startswith("float64: gradients agree to")
    # 3 resolutions x 4 convolutions x (input, weight gradient), 2 reductions x 2 strided ones
    assert len(lines) == 3 + 2 + 3 * 4 * 2 + 2 * 2
    assert {line.split()[4] for line in lines[5:]} == {"input", "weight", "both"}
    variants, check = bench_engine.shortcut_variants(4, 3, 2)
    model = variants["all"].args[0]
    calls = {}
    for name, off in (("all", ()), ("none", bench_engine.SHORTCUTS)):
        with bench_engine.shortcuts_off(model, off), aten_calls() as counts:
            model(torch.randn(2, 3, 32, 32), {t: torch.full((14, 8), 0.125) for t in ("normal", "reduce")})
        calls[name] = counts
    # off: every edge pools for itself (14 edges x 3 cells) and adds out of place
    assert calls["all"]["max_pool2d_with_indices"] == 5 * 3 and calls["none"]["max_pool2d_with_indices"] == 14 * 3
    assert calls["all"]["addcmul_"] > 0 and calls["none"]["addcmul_"] == 0
    assert calls["none"]["relu"] - calls["all"]["relu"] == 3  # preprocessing ReLUs: 2 per cell, 1 per state
    assert all(not m[0]._forward_hooks for m in model.modules() if type(m).__name__ == "PoolBN")  # back on after
    dw = next(m for m in model.modules() if type(m).__name__ == "DepthwiseConv2d" and m.stride == (1, 1))
    x = torch.randn(2, dw.in_channels, 8, 8, requires_grad=True)
    with bench_engine.shortcuts_off(model, ("depthwise",)):
        assert type(dw(x).grad_fn).__name__ == "ConvolutionBackward0"  # aten's kernels, forward and backward
    assert "SamePaddedDepthwise" in type(dw(x).grad_fn).__name__  # back on after the block
    assert check(torch.float64) < 1e-9
    wrong = lambda out, w, y: 1.01 * w * y if out is None else out + w * y  # an "off" path that changed the numbers
    with (
        pytest.raises(RuntimeError, match="the shortcuts change the numbers"),
        mock.patch.object(bench_engine, "_out_of_place", wrong),
    ):
        check(torch.float64)


def test_engine_benchmark_times_a_sampling_method_on_common_draws(tmp_path, one_thread):
    """``--method``: a method that samples draws inside each step, call ``i`` of every variant on the seed ``i``;
    a second row gives each variant's mean ratio to ``all`` over those paired calls with its interval."""
    assert bench_engine.draws_inside("gdas") and not bench_engine.draws_inside("darts_1st")
    with pytest.raises(SystemExit) as exit_:
        bench_engine.main(["--method", "gdas", "--samples", "0"])
    assert exit_.value.code == 2
    out = tmp_path / "engine.txt"
    argv = ["--method", "gdas", "--batch", "2", "--channels", "4", "--layers", "3", "--rounds", "2", "--samples", "2"]
    assert bench_engine.main([*argv, "--out", str(out)]) == 0
    header, _, row, intervals = out.read_text().splitlines()
    assert "gdas step" in header and "each the mean of 2 calls" in header
    assert row.split()[0] == "2" and len(row.split("(")[0].split()) == 1 + 2 * (len(bench_engine.SHORTCUTS) + 2)
    assert intervals.startswith("    2 mean over 4 common draws [95 %]: no_shared_pools ")  # 2 rounds x 2 calls
    number = r"(-?[\d.]+)"  # a lower bound below 0 when one call of four was preempted on a loaded machine
    cells = re.findall(rf"(\w+) {number} \[{number}, {number}\]", intervals.split(": ", 1)[1])
    assert [name for name, *_ in cells] == [*(f"no_{s}" for s in bench_engine.SHORTCUTS), "none"]  # all but `all`
    assert all(float(lo) <= float(r) <= float(hi) for _, r, lo, hi in cells)  # each interval around its mean ratio

    variants, check = bench_engine.shortcut_variants(4, 3, 2, method="gdas")
    model, weights = variants["all"].args[0], variants["all"].args[3]
    other = variants["none"].args[3]
    first, again = weights(), other()  # call 0 of two variants: the same draw, each its own graph to the alphas
    assert all(torch.equal(first[t], again[t]) and first[t] is not again[t] for t in first)
    second = weights()
    assert any(not torch.equal(first[t], second[t]) for t in first)  # call 1: the next seed
    for w in (first, again):
        (w["normal"] * torch.arange(8.0)).sum().backward()  # each backward runs through its own draw
    assert check(torch.float64) < 1e-9  # the ops not drawn have no gradient in either
    assert any(p.grad is None for p in model.parameters())


def _with_kernel_scaled(form, kernel):
    """``form`` run with ``kernel`` scaled by 1.5 and the others' as they are (a merge that changed the numbers)."""

    def run():
        with torch.no_grad():
            kernel.mul_(1.5)
        try:
            return form()
        finally:
            with torch.no_grad():
                kernel.div_(1.5)

    return run


def test_aten_timer_times_the_backward_and_its_repeats_leave_the_step_as_it_was(one_thread):
    """aten_timer with warm repeats over a dense DARTS step: the backward's calls are timed too, and the repeats run
    on copies of each call's inputs (BN's running statistics, which its schema does not mark written, in-place sums,
    the optimisers' updates), so the network and the method after the step are bitwise those of the same step
    without the timer."""
    plain, timed = (make_method("darts_1st", channels=4, layers=3) for _ in range(2))
    method_step(plain, 2)()
    step, timer = method_step(timed, 2), profile_step.aten_timer(by_input=True, warm=True)
    with timer:
        step()
        torch.rand(3)  # a draw: timed, never repeated
    ops = {op for op, _ in timer.rows}
    assert {"aten.convolution_backward.default", "aten.native_batch_norm_backward.default"} <= ops
    assert "aten.native_batch_norm.default" in ops and any(op.endswith("_.Tensor") for op in ops)  # written args
    draw = timer.rows[("aten.rand.default", "")]
    assert (draw.calls, draw.repeat_seconds, draw.repeats) == (1, 0.0, 0)
    assert any(op.startswith("aten._foreach_") for op in ops)  # the optimisers' list updates, repeated on copies
    for (op, inputs), r in timer.rows.items():
        namespace, name, overload = op.split(".")  # aten.add_.Tensor, profiler._record_function_enter_new.default
        func = getattr(getattr(getattr(torch.ops, namespace), name), overload)
        assert r.seconds > 0 and r.calls >= 1, op
        repeated = (r.calls, True) if profile_step._repeatable(func) else (0, False)
        assert (r.repeats, r.repeat_seconds > 0) == repeated, op
        assert all(re.fullmatch(r"\[?(\d+(x\d+)*|scalar):(c|cl|s)\]?", t) for t in inputs.split()), inputs
    assert any(":s" in inputs for _, inputs in timer.rows)  # a strided input is named as one (a slice, a view)
    assert any(op == "aten.cat.default" and inputs.startswith("[") for op, inputs in timer.rows)  # a list's tensors
    assert nested_equal(plain.ctx.model.state_dict(), timed.ctx.model.state_dict())
    assert nested_equal(plain.state_dict(), timed.state_dict())  # alphas, optimisers, generator, schedule


def test_aten_timer_repeats_no_draw_and_writes_only_copies():
    ops = torch.ops.aten
    assert profile_step._repeatable(ops.add_.Tensor) and profile_step._repeatable(ops._foreach_add_.List)
    assert not profile_step._repeatable(ops.bernoulli_.float)  # a repeat would move the generator
    base = torch.ones(4, 6)
    view, expanded = base[:, ::2], torch.ones(1, 3).expand(4, 3)
    copied = profile_step._copy((view, [base], expanded, 2.0))
    assert copied[0].stride() == view.stride() and copied[0].data_ptr() != view.data_ptr()  # the same kernel path
    copied[0].add_(1)
    copied[1][0].add_(1)
    assert torch.equal(base, torch.ones(4, 6))  # the repeat wrote copies
    assert copied[2] is expanded and copied[3] == 2.0


def test_profile_step_aten_table_by_input_with_repeats(tmp_path, one_thread, capsys):
    # Every key is asked for (--rows far above their count), so no assertion hangs on which calls a loaded machine
    # happens to rank first: allocations (aten.empty, no tensor inputs) and profiler markers rank high under load.
    out = tmp_path / "aten.json"
    argv = ["--variant", "gdas", "--channels", "4", "--layers", "3", "--batch", "2", "--formats", "channels_last"]
    options = ["--aten", "--by-input", "--warm", "--steps", "2", "--rows", "100000", "--json", str(out)]
    assert profile_step.main([*argv, *options]) == 0
    printed = capsys.readouterr().out
    assert "2 steps" in printed and "first/repeat" in printed
    (r,) = json.loads(out.read_text())["results"]
    top = r["top"]
    assert r["steps"] == 2 and r["step_s"] > 0 and r["calls"] > 100 and len(top) > 20
    assert [t["ms"] for t in top] == sorted((t["ms"] for t in top), reverse=True)
    assert sum(t["share"] for t in top) == pytest.approx(1.0)  # every key is in the table
    assert all(re.fullmatch(r"\w+\.\w+\.\w+", t["op"]) for t in top)  # namespace.name.overload
    convolutions = [t for t in top if t["op"] == "aten.convolution.default"]
    assert convolutions and all(":cl" in t["inputs"] for t in convolutions)  # the channels-last network's activations
    assert any(t["warm_ms"] is not None and t["warm_ms"] > 0 for t in convolutions)  # the repeats were timed
    assert not any(t["inputs"] for t in top if t["op"] == "aten.empty.memory_format")  # sizes only: no tensors


def test_profile_step_aten_rows_option_limits_the_table(tmp_path, one_thread):
    """--rows reaches the table (which rows it keeps: the next test, on fixed sums)."""
    out = tmp_path / "aten.json"
    argv = ["--variant", "gdas", "--channels", "4", "--layers", "3", "--batch", "2", "--formats", "channels_last"]
    assert profile_step.main([*argv, "--aten", "--steps", "1", "--rows", "3", "--json", str(out)]) == 0
    (r,) = json.loads(out.read_text())["results"]
    assert len(r["top"]) == 3 and sum(t["share"] for t in r["top"]) < 1
    assert [t["ms"] for t in r["top"]] == sorted((t["ms"] for t in r["top"]), reverse=True)


def test_aten_table_keeps_the_slowest_keys_and_totals_them_all():
    """The table from fixed sums (no clock): ``rows`` keeps the keys with the most time, slowest first, per step;
    the totals count every key; a key not repeated on every call has no warm time."""
    Row = profile_step.AtenRow
    timed = {
        ("aten.relu.default", ""): Row(seconds=0.002, calls=4, repeat_seconds=0.001, repeats=4),
        ("aten.empty.memory_format", ""): Row(seconds=0.001, calls=10),
        ("aten.convolution.default", ""): Row(seconds=0.006, calls=2, repeat_seconds=0.004, repeats=2),
        ("aten.rand.default", ""): Row(seconds=0.003, calls=2, repeat_seconds=0.001, repeats=1),
    }
    r = profile_step.aten_table(timed, steps=2, rows=3)
    assert [t["op"] for t in r["top"]] == ["aten.convolution.default", "aten.rand.default", "aten.relu.default"]
    assert [t["ms"] for t in r["top"]] == pytest.approx([3.0, 1.5, 1.0])  # per step
    assert [t["share"] for t in r["top"]] == pytest.approx([0.5, 0.25, 1 / 6])  # of all four keys' 12 ms
    assert [t["warm_ms"] for t in r["top"]] == [pytest.approx(2.0), None, pytest.approx(0.5)]
    assert [t["calls"] for t in r["top"]] == [1, 1, 2]
    assert r["aten_s"] == pytest.approx(0.006) and r["calls"] == 9  # every key, per step


@pytest.mark.parametrize("argv", [["--warm"], ["--aten", "--steps", "0"]])
def test_profile_step_rejects_options_it_cannot_honour(argv, capsys):
    with pytest.raises(SystemExit) as e:
        profile_step.main(argv)
    assert e.value.code == 2 and "Traceback" not in capsys.readouterr().err
