"""The CPU kernels the training loop swaps in: same meaning as the ops they replace."""

import pytest
import torch

from robolora.kernels import (
    FastDropout,
    _LoraBranch,
    drop_positions,
    training_attention,
    use_fast_dropout,
    use_fused_lora,
    use_fused_norms,
)


def test_drop_positions_are_sorted_distinct_in_range_at_the_rate():
    torch.manual_seed(0)
    positions = drop_positions(200_000, 0.1)
    assert positions.dtype == torch.long
    assert positions.min() >= 0 and positions.max() < 200_000
    assert torch.all(positions[1:] > positions[:-1])
    assert len(positions) / 200_000 == pytest.approx(0.1, abs=0.003)
    # spread evenly: each tenth of the range holds a tenth of them
    counts = torch.histc(positions.float(), bins=10, min=0, max=200_000)
    assert (counts / counts.mean() - 1).abs().max() < 0.05


def test_drop_positions_draw_more_gaps_until_the_range_is_covered():
    torch.manual_seed(1)
    positions = drop_positions(50_000, 0.2, first_draw=3)  # far too few gaps at first
    assert positions.max() > 49_900
    assert len(positions) / 50_000 == pytest.approx(0.2, abs=0.01)
    assert len(drop_positions(1000, 0.0)) == 0
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        drop_positions(10, 1.0)


def test_fast_dropout_drops_at_the_rate_and_keeps_the_mean():
    torch.manual_seed(0)
    x = torch.ones(64, 128, 96)
    out = FastDropout(0.2).train()(x)
    dropped = (out == 0).float().mean().item()
    assert dropped == pytest.approx(0.2, abs=0.005)
    assert out.mean().item() == pytest.approx(1.0, abs=0.01)
    kept = out[out != 0]
    assert torch.allclose(kept, torch.full_like(kept, 1 / 0.8))


def test_fast_dropout_masks_the_gradient_as_the_forward_and_repeats_under_a_seed():
    x = torch.randn(4, 10, 32, requires_grad=True)
    torch.manual_seed(3)
    out = FastDropout(0.5).train()(x)
    out.sum().backward()
    assert torch.equal(x.grad == 0, out == 0)
    assert torch.allclose(x.grad[x.grad != 0], torch.tensor(2.0))
    torch.manual_seed(3)
    assert torch.equal(FastDropout(0.5).train()(x), out)
    # a transposed (non-contiguous) input is dropped by its logical positions
    y = torch.ones(6, 5).t()
    assert FastDropout(0.5).train()(y).shape == (5, 6)


def test_fast_dropout_is_the_identity_in_eval_mode_and_at_rate_zero():
    x = torch.randn(3, 5)
    assert FastDropout(0.3).eval()(x) is x
    assert FastDropout(0.0).train()(x) is x


def test_use_fast_dropout_replaces_each_lora_dropout_of_a_peft_model():
    from peft import LoraConfig, get_peft_model

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.q_proj = torch.nn.Linear(8, 8)
            self.v_proj = torch.nn.Linear(8, 8)

        def forward(self, x):
            return self.v_proj(self.q_proj(x))

    model = get_peft_model(Tiny(), LoraConfig(r=2, lora_dropout=0.1, target_modules=["q_proj", "v_proj"]))
    assert use_fast_dropout(model) == 2
    layers = [m for m in model.modules() if isinstance(m, FastDropout)]
    assert [d.p for d in layers] == [0.1, 0.1]
    assert not any(isinstance(m, torch.nn.Dropout) for m in model.modules())
    model(torch.randn(2, 8)).sum().backward()  # still trains


def test_training_attention_is_eager_on_the_cpu_only():
    assert training_attention(use_gpu=False) == "eager"
    assert training_attention(use_gpu=True) is None


def _lora_model(p: float, seed: int = 0):
    from collections import OrderedDict

    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    layers = OrderedDict(fc=torch.nn.Linear(16, 24), act=torch.nn.Tanh(), out=torch.nn.Linear(24, 8))
    model = get_peft_model(
        torch.nn.Sequential(layers), LoraConfig(r=4, lora_alpha=8, lora_dropout=p, target_modules=["fc", "out"])
    )
    for name, param in model.named_parameters():
        if "lora_B" in name:  # PEFT starts B at zero; a non-zero B makes the branch count
            torch.nn.init.normal_(param)
    use_fast_dropout(model)
    return model


def _output_and_grads(model, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    x = x.clone().requires_grad_(True)
    torch.manual_seed(7)
    out = model(x)
    (out * torch.linspace(-1, 1, out.numel(), device=out.device, dtype=out.dtype).view_as(out)).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return out.detach(), grads | {"input": x.grad}


@pytest.mark.parametrize("p", [0.0, 0.3])
def test_fused_lora_computes_what_peft_computes(p):
    x = torch.randn(3, 5, 16)
    plain = _lora_model(p).train()
    fused = _lora_model(p).train()
    assert use_fused_lora(fused) == 2
    assert use_fused_lora(fused) == 0  # already routed
    assert "_LoraBranch" in fused.base_model.model.fc(x.detach().requires_grad_()).grad_fn.name()
    want_out, want_grads = _output_and_grads(plain, x)
    got_out, got_grads = _output_and_grads(fused, x)
    assert torch.allclose(got_out, want_out, atol=1e-5)
    assert want_grads.keys() == got_grads.keys() and len(got_grads) == 5
    for name, grad in want_grads.items():
        assert torch.allclose(got_grads[name], grad, atol=1e-5), name
    if p:  # the dropout really drops: another draw gives another output
        assert not torch.allclose(fused(x), got_out)
    assert torch.allclose(fused.eval()(x), plain.eval()(x), atol=1e-5)


def test_fused_lora_leaves_disabled_merged_and_other_dtypes_to_peft():
    x = torch.randn(2, 16)
    plain, fused = _lora_model(0.0).eval(), _lora_model(0.0).eval()
    use_fused_lora(fused)
    assert "_LoraBranch" in fused.base_model.model.out(torch.randn(2, 24, requires_grad=True)).grad_fn.name()
    with fused.disable_adapter():
        base = fused(x)
        assert "_LoraBranch" not in fused.base_model.model.out(torch.randn(2, 24, requires_grad=True)).grad_fn.name()
    with plain.disable_adapter():
        assert torch.allclose(base, plain(x))
    assert not torch.allclose(base, fused(x))
    assert torch.allclose(fused.to(torch.float64)(x.double()), plain.to(torch.float64)(x.double()))
    for model in (fused, plain):  # adapters in float32 on a float64 base: PEFT casts the input
        model.base_model.model.fc.lora_A["default"].to(torch.float32)
        model.base_model.model.fc.lora_B["default"].to(torch.float32)
    assert torch.allclose(fused(x.double()), plain(x.double()), atol=1e-5)
    fused.merge_adapter()
    assert torch.allclose(fused(x.double()), plain(x.double()), atol=1e-5)


def test_lora_branch_with_native_dropout_matches_its_composition():
    """The GPU form of the branch (``torch.native_dropout`` inside, ``scaling`` alone in the multiply)
    against the same operations run one by one with autograd, from the same seed, here on the CPU."""
    result, x = torch.randn(3, 5, 24), torch.randn(3, 5, 16)
    a, b = torch.randn(4, 16), torch.randn(24, 4)

    def run(fused: bool):
        leaves = [t.clone().requires_grad_(True) for t in (result, x, a, b)]
        r, xx, aa, bb = leaves
        torch.manual_seed(11)
        if fused:
            out = _LoraBranch.apply(r, xx, aa, bb, torch.empty(0, dtype=torch.long), 0.4, 2.0)
        else:
            h, _ = torch.native_dropout(xx.reshape(-1, 16), 0.4, True)
            out = r + 2.0 * (h @ aa.t() @ bb.t()).view(3, 5, 24)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        return out.detach(), [t.grad for t in leaves]

    want_out, want_grads = run(False)
    got_out, got_grads = run(True)
    assert torch.allclose(got_out, want_out, atol=1e-5)
    for got, want in zip(got_grads, want_grads, strict=True):
        assert torch.allclose(got, want, atol=1e-5)
    assert (got_grads[1] == 0).float().mean().item() == pytest.approx(0.4, abs=0.15)  # the input's dropped share


@pytest.mark.gpu
@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float32, 1e-4), (torch.bfloat16, 2e-2)])
def test_fused_lora_on_a_gpu_draws_the_masks_peft_draws(dtype, tolerance):
    """On a GPU the branch's ``native_dropout`` draws the masks ``torch.nn.Dropout`` draws there: the same
    outputs and gradients as PEFT (to rounding; bf16 rounds PEFT's separate steps each time)."""
    x = torch.randn(4, 7, 16, device="cuda", dtype=dtype)
    plain = _lora_model(0.3).to("cuda", dtype).train()
    fused = _lora_model(0.3).to("cuda", dtype).train()
    use_fused_lora(fused)
    assert "_LoraBranch" in fused.base_model.model.fc(x.detach().requires_grad_()).grad_fn.name()
    want_out, want_grads = _output_and_grads(plain, x)
    got_out, got_grads = _output_and_grads(fused, x)

    def close(got: torch.Tensor, want: torch.Tensor) -> bool:
        return bool((got.float() - want.float()).norm() <= tolerance * want.float().norm())

    assert close(got_out, want_out)
    for name, grad in want_grads.items():
        assert close(got_grads[name], grad), name


def _tiny_llama(seed: int = 0):
    """The test model's dimensions (``robolora.models.TINY_LLAMA``) with a small vocabulary."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from robolora.models import TINY_LLAMA

    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, **TINY_LLAMA))
    for name, param in model.named_parameters():
        if "norm" in name:  # Llama starts them at one; other weights make the multiply count
            torch.nn.init.normal_(param, 1.0, 0.3)
    return model


def _norm_outputs(model, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    embeds = model.get_input_embeddings()(ids).detach().requires_grad_(True)
    logits = model(inputs_embeds=embeds).logits
    (logits * torch.linspace(-1, 1, logits.numel(), device=logits.device).view_as(logits)).sum().backward()
    return logits.detach(), embeds.grad


def test_fused_norms_route_each_llama_norm_once_and_leave_the_cpu_to_llama():
    ids = torch.randint(0, 64, (2, 9))
    plain, fused = _tiny_llama(), _tiny_llama()
    assert use_fused_norms(fused) == 5  # two per layer and the final one
    assert use_fused_norms(fused) == 0  # already routed
    for got, want in zip(_norm_outputs(fused, ids), _norm_outputs(plain, ids), strict=True):
        assert torch.equal(got, want)  # CPU tensors: Llama's own forward


@pytest.mark.gpu
@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_fused_norms_on_a_gpu_run_the_fused_kernel_with_llamas_results(dtype, tolerance):
    """On a GPU each norm is one fused kernel forward and back, with Llama's outputs and gradients (to
    rounding: bf16 rounds once where Llama's passes round twice)."""
    ids = torch.randint(0, 64, (2, 9), device="cuda")
    plain, fused = _tiny_llama().to("cuda", dtype), _tiny_llama().to("cuda", dtype)
    use_fused_norms(fused)
    norm = fused.model.norm
    x = torch.randn(3, norm.weight.shape[0], device="cuda", dtype=dtype)
    assert "FusedRmsNorm" in norm(x.requires_grad_()).grad_fn.name()
    for got, want in zip(_norm_outputs(fused, ids), _norm_outputs(plain, ids), strict=True):
        assert (got.float() - want.float()).norm() <= tolerance * want.float().norm()
    norm.weight.data = norm.weight.data.float()  # another dtype than the input's: Llama's forward, promoting
    assert norm(x.detach()).dtype == torch.float32
