"""The fast path: channels-last layout (same parameters, same values up to rounding, NHWC kernels), the
tensor-valued drop-path probability that lets a compiled network change it without recompiling, and the
config keys that switch both on (recorded, and absent from the hash while at their defaults)."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.utils import counters

from egsbench.benchmark import phases
from egsbench.benchmark.api import resolve_config, run
from egsbench.benchmark.speed import (
    CHANNELS_LAST_FROM,
    apply_memory_format,
    compile_network,
    compile_supernet,
    conv_width,
    lay_out,
    resolve_memory_format,
)
from egsbench.methods import METHODS
from egsbench.tasks.spaces import (
    DARTS_V2,
    SPACES,
    ConfigError,
    NetworkCIFAR,
    SearchNetwork,
    SearchSpace,
    Supernet,
)
from egsbench.tasks.spaces.cell import drop_path
from egsbench.testing.methods import batch, build


def _search_net(memory_format: str) -> SearchNetwork:
    torch.manual_seed(0)
    return apply_memory_format(SearchNetwork(SPACES.get("darts"), 4, 10, 3), memory_format)


def test_channels_last_supernet_has_the_same_parameters_outputs_and_gradients():
    plain, nhwc = _search_net("contiguous"), _search_net("channels_last")
    assert [(n, p.shape) for n, p in plain.named_parameters()] == [(n, p.shape) for n, p in nhwc.named_parameters()]
    assert any(p.dim() == 4 and not p.is_contiguous() for p in nhwc.parameters())  # the layout did change
    space = plain.space
    w = {
        t: torch.softmax(torch.randn(space.num_edges, space.num_ops, generator=torch.Generator().manual_seed(1)), -1)
        for t in space.cell_types
    }
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    y_plain, y_nhwc = plain(x, w), nhwc(x, w)
    torch.testing.assert_close(y_nhwc, y_plain, rtol=1e-4, atol=1e-5)
    y_plain.square().sum().backward()
    y_nhwc.square().sum().backward()
    for (name, a), b in zip(plain.named_parameters(), nhwc.parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-3, atol=1e-5, msg=name)


def test_channels_last_is_applied_once_and_leaves_networks_without_4d_tensors_alone():
    net = apply_memory_format(torch.nn.Sequential(torch.nn.Linear(3, 2)), "channels_last")
    assert net(torch.ones(5, 3)).shape == (5, 2)
    conv = apply_memory_format(torch.nn.Conv2d(3, 4, 3), "channels_last")
    apply_memory_format(conv, "channels_last")
    assert len(conv._forward_pre_hooks) == 1
    with pytest.raises(ValueError, match="memory_format must be one of"):
        apply_memory_format(conv, "nhwc")


def test_auto_picks_the_layout_per_device_dtype_and_width():
    threshold = CHANNELS_LAST_FROM["cpu", torch.float32]
    wide, narrow = _search_net("contiguous"), NetworkCIFAR(DARTS_V2, 4, 10, 3)
    assert conv_width(narrow) == 4  # the cells' width C, not the stem's input
    for net in (wide, narrow):
        expected = "channels_last" if conv_width(net) >= threshold else "contiguous"
        assert resolve_memory_format("auto", net, "cpu") == expected
    wider = NetworkCIFAR(DARTS_V2, max(threshold, 4), 10, 3)
    assert resolve_memory_format("auto", wider, torch.device("cpu")) == "channels_last"
    assert resolve_memory_format("contiguous", wider, "cpu") == "contiguous"  # an explicit choice is kept
    lstm = torch.nn.LSTM(8, 8)
    assert conv_width(lstm) is None and resolve_memory_format("auto", lstm, "cpu") == "contiguous"
    # The CUDA rule is decided without a GPU: NCHW in both dtypes (channels-last measured slower on an H200).
    assert resolve_memory_format("auto", wider, "cuda", torch.bfloat16) == "contiguous"
    assert resolve_memory_format("auto", wider, "cuda", torch.float32) == "contiguous"
    assert resolve_memory_format("channels_last", wider, "cuda", torch.bfloat16) == "channels_last"
    assert lay_out(wider, "auto", "cpu") == "channels_last"
    assert any(p.dim() == 4 and not p.is_contiguous() for p in wider.parameters())  # laid out as it says
    with pytest.raises(ValueError, match="memory_format must be one of"):
        resolve_memory_format("nhwc", wider, "cpu")


def test_tensor_drop_path_follows_the_setter_and_is_not_saved():
    net = NetworkCIFAR(DARTS_V2, 4, 10, 3)
    assert net.drop_path_arg() == 0.0  # eager: the float
    net.use_tensor_drop_path()
    net.drop_path_prob = 0.3
    arg = net.drop_path_arg()
    assert isinstance(arg, torch.Tensor) and float(arg) == pytest.approx(0.3) and net.drop_path_prob == 0.3
    assert not any("drop" in key for key in net.state_dict())


def test_tensor_drop_path_drops_samples_with_the_probability_and_zero_keeps_everything():
    x = torch.ones(4000, 1, 1, 1)
    torch.manual_seed(0)
    y = drop_path(x, torch.tensor(0.25))
    kept = (y != 0).float().mean().item()
    assert abs(kept - 0.75) < 0.03 and torch.allclose(y[y != 0], torch.tensor(1 / 0.75))
    assert torch.equal(drop_path(x, torch.tensor(0.0)), x)


def test_compiled_network_changes_drop_path_without_recompiling():
    torch._dynamo.reset()
    net = compile_network(NetworkCIFAR(DARTS_V2, 4, 10, 3).train(), backend="eager")
    x = torch.randn(2, 3, 16, 16)
    net(x)  # the first compilation
    with torch._dynamo.config.patch(error_on_recompile=True):
        for p in (0.1, 0.2, 0.3):
            net.drop_path_prob = p
            logits, _ = net(x)
            assert torch.isfinite(logits).all()
    torch._dynamo.reset()


# The DARTS space's code paths at a fraction of its trace time (dynamo traces every op of every edge: 28 s for the
# full 14-edge, 8-op space at 3 cells here, 4.5 s for this): both cell types, FactorizedReduce, pools with their
# BN, identity, a separable and a dilated convolution, the zero op skipped.
SMALL = SearchSpace(
    "darts-small",
    ops=("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "dil_conv_3x3"),
    n_nodes=2,
)


@pytest.mark.parametrize("name", ["snas", "darts"])
def test_a_dense_methods_compiled_supernet_compiles_once_and_steps_as_eager(name):
    """compile: true for the dense methods: the active-op lists stay eager and constant, so after the first step
    no step recompiles (dynamo's eager backend: the property is the graph's guards; inductor's C++ build takes
    minutes on a CPU), and the steps give what the eager supernet gives (the same random draws: SNAS's Gumbel
    samples and drop path; DARTS's second-order step runs the compiled forward on its virtual weights too)."""
    cls = METHODS.get(name)
    assert cls.dense_weights
    torch._dynamo.reset()
    (eager, eager_ctx), (compiled, ctx) = (build(cls, space=SMALL) for _ in range(2))
    assert compile_supernet(ctx.model, backend="eager")
    batches = [(batch(seed), batch(seed + 10)) for seed in range(2)]
    counters.clear()
    torch.manual_seed(1)
    compiled.step(*batches[0])  # the first compilation
    graphs = counters["stats"]["unique_graphs"]
    assert graphs >= 1  # the supernet did go through dynamo
    with torch._dynamo.config.patch(error_on_recompile=True):
        compiled.step(*batches[1])
    assert counters["stats"]["unique_graphs"] == graphs
    torch.manual_seed(1)
    for train, val in batches:
        eager.step(train, val)
    torch._dynamo.reset()
    for t in compiled.alphas:
        torch.testing.assert_close(compiled.alphas[t], eager.alphas[t])
    for a, b in zip(ctx.model.parameters(), eager_ctx.model.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_sampling_methods_keep_an_eager_supernet():
    assert {name for name in METHODS.names() if METHODS.get(name).dense_weights} == {"darts", "snas"}
    assert not Supernet().compile_search_forward()  # a supernet without the split forward says so


def test_config_keys_are_validated_recorded_and_out_of_the_hash_at_their_defaults():
    default = resolve_config("smoke/egs-cifar10")
    assert default.memory_format == "auto"
    assert "memory_format" not in default.to_dict() and "compile" not in default.to_dict()
    assert resolve_config("smoke/egs-cifar10", {"memory_format": "auto"}).hash() == default.hash()
    nhwc = resolve_config("smoke/egs-cifar10", {"memory_format": "channels_last", "compile": True})
    assert nhwc.to_dict()["memory_format"] == "channels_last" and nhwc.to_dict()["compile"] is True
    assert nhwc.hash() != default.hash()
    with pytest.raises(ConfigError, match="memory_format must be one of"):
        resolve_config("smoke/egs-cifar10", {"memory_format": "nhwc"})
    with pytest.raises(ConfigError, match="compile"):
        resolve_config("smoke/egs-cifar10", {"compile": "yes"})


def test_a_channels_last_compiled_run_records_its_switches(tmp_path, monkeypatch):
    compiled = []

    def eager_compile(net, **options):  # inductor's C++ build takes minutes on a CPU; dynamo's eager backend not
        compiled.append(type(net).__name__)
        return compile_network(net, backend="eager")

    def eager_supernet(net, **options):
        compiled.append(type(net).__name__)
        return compile_supernet(net, backend="eager")

    monkeypatch.setattr(phases, "compile_network", eager_compile)
    monkeypatch.setattr(phases, "compile_supernet", eager_supernet)
    overrides = {"memory_format": "channels_last", "compile": True}
    record = run("smoke/random-cifar10", tmp_path / "run", overrides=overrides, progress=False)
    torch._dynamo.reset()
    assert record.status == "ok" and compiled == ["NetworkCIFAR"]  # random search samples: its supernet stays eager
    assert record.search.compiled is False and record.evaluate.compiled is True
    assert record.config["memory_format"] == "channels_last" and record.config["compile"] is True
    assert record.search.memory_format == record.evaluate.memory_format == "channels_last"


def test_cudnn_autotunes_unless_the_run_is_deterministic():
    from egsbench.benchmark.launch import apply_determinism

    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    try:
        apply_determinism(False)
        assert torch.backends.cudnn.benchmark and not torch.backends.cudnn.deterministic  # DARTS: benchmark = True
        apply_determinism(True)
        assert not torch.backends.cudnn.benchmark and torch.backends.cudnn.deterministic
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[1], before[2]
