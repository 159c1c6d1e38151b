"""Genetics throughput: wall time and peak memory of load, save, every crossover, mutation and breeding.

Adapters are shaped like Mistral-7B (32 layers, hidden 4096, kv 1024, intermediate 14336; q, k, v, o,
gate, up, down) at rank 16 by default. Each phase runs in a fresh subprocess so its peak resident
memory (Linux VmHWM, reset through /proc/self/clear_refs) is its own. A second table compares our
factor-space ``svd`` merge with PEFT's ``add_weighted_adapter(combination_type="svd")`` (dense SVD) on a
model small enough to instantiate here, and checks that both produce the same update.

    python benchmarks/genetics.py            # full size (a few minutes on 2 cores)
    python benchmarks/genetics.py --quick    # tiny shapes, seconds (what the test suite runs)
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nora.genetics import (
    CROSSOVER_METHODS,
    CrossoverSpec,
    Genome,
    LoraModule,
    MutationSpec,
    breed,
    crossover,
    init_genome,
    load_genome,
    make_generator,
    mutate,
    save_genome,
)

MUTATION = MutationSpec(
    sigma=1e-3,
    gene_probability=0.1,
    reset_probability=0.1,
    grow_probability=0.2,
    shrink_probability=0.2,
    max_rank=32,
)


@dataclass(frozen=True)
class Shape:
    """A Llama/Mistral-style decoder's linear shapes."""

    layers: int
    hidden: int
    kv: int
    intermediate: int

    def modules(self) -> dict[str, tuple[int, int]]:
        per_layer = {
            "self_attn.q_proj": (self.hidden, self.hidden),
            "self_attn.k_proj": (self.kv, self.hidden),
            "self_attn.v_proj": (self.kv, self.hidden),
            "self_attn.o_proj": (self.hidden, self.hidden),
            "mlp.gate_proj": (self.intermediate, self.hidden),
            "mlp.up_proj": (self.intermediate, self.hidden),
            "mlp.down_proj": (self.hidden, self.intermediate),
        }
        return {
            f"model.layers.{i}.{name}": shape for i in range(self.layers) for name, shape in per_layer.items()
        }


MISTRAL_7B = Shape(layers=32, hidden=4096, kv=1024, intermediate=14336)
QUICK = Shape(layers=2, hidden=128, kv=32, intermediate=448)


def _status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def _measure(operation: Callable[[], object]) -> dict[str, float]:
    """Time ``operation`` and the peak resident memory it adds above what was resident before it."""
    _reset_peak()
    before = _status_bytes("VmRSS")
    start = time.perf_counter()
    result = operation()
    seconds = time.perf_counter() - start
    peak = _status_bytes("VmHWM") - before
    del result
    return {"seconds": seconds, "peak_bytes": float(peak)}


def _parents(workdir: Path) -> list[Genome]:
    return [load_genome(workdir / "p1"), load_genome(workdir / "p2")]


def _warm_up(phase: str) -> None:
    """Run the phase's operation once on tiny adapters so one-time library set-up is not timed."""
    generator = make_generator(9)
    tiny = [init_genome(QUICK.modules(), 4, 8, generator, b_std=0.01) for _ in range(2)]
    if phase.startswith("crossover:"):
        spec = CrossoverSpec(method=phase.removeprefix("crossover:"))  # type: ignore[arg-type]
        crossover(tiny, [0.4, 0.6], spec, make_generator(1))
    elif phase in ("mutation", "breed"):
        breed(tiny, [0.4, 0.6], CrossoverSpec(method="nora"), MUTATION, make_generator(1), make_generator(2))


def run_phase(phase: str, workdir: Path) -> dict[str, float]:
    """One measured phase, run inside its own process."""
    _warm_up(phase)
    if phase == "load":
        return _measure(lambda: load_genome(workdir / "p1"))
    if phase == "save":
        genome = load_genome(workdir / "p1")
        return _measure(lambda: save_genome(genome, workdir / "saved", overwrite=True))
    if phase == "mutation":
        genome = load_genome(workdir / "p1")
        return _measure(lambda: mutate(genome, MUTATION, make_generator(2)))
    if phase == "breed":
        nora = CrossoverSpec(method="nora")

        def load_and_breed() -> Genome:
            parents = _parents(workdir)
            return breed(parents, [0.4, 0.6], nora, MUTATION, make_generator(1), make_generator(2))

        with_parents = _measure(load_and_breed)
        parents = _parents(workdir)
        alone = _measure(
            lambda: breed(parents, [0.4, 0.6], nora, MUTATION, make_generator(1), make_generator(2))
        )
        return {"seconds": alone["seconds"], "peak_bytes": with_parents["peak_bytes"]}
    method = phase.removeprefix("crossover:")
    parents = _parents(workdir)
    spec = CrossoverSpec(method=method)  # type: ignore[arg-type]
    return _measure(lambda: crossover(parents, [0.4, 0.6], spec, make_generator(1)))


def _in_subprocess(phase: str, workdir: Path, threads: int) -> dict[str, float]:
    command = [
        sys.executable,
        __file__,
        "--phase",
        phase,
        "--workdir",
        str(workdir),
        "--threads",
        str(threads),
    ]
    output = subprocess.run(command, check=True, capture_output=True, text=True, timeout=1800).stdout
    result: dict[str, float] = json.loads(output.strip().splitlines()[-1])
    return result


def throughput_table(shape: Shape, rank: int, workdir: Path, threads: int) -> None:
    """Write two parents, then measure every phase; print a table."""
    generator = make_generator(0)
    for name in ("p1", "p2"):
        save_genome(
            init_genome(shape.modules(), rank, 2 * rank, generator, b_std=0.01),
            workdir / name,
            overwrite=True,
        )
    size = load_genome(workdir / "p1").nbytes
    phases = ["load", "save", *[f"crossover:{m}" for m in CROSSOVER_METHODS], "mutation", "breed"]
    print(
        f"\nGenetics on {shape.layers}-layer adapters (hidden {shape.hidden}, kv {shape.kv}, intermediate "
        f"{shape.intermediate}), rank {rank}, fp32, {threads} torch thread(s): "
        f"one adapter = {size / 2**20:.1f} MiB"
    )
    print(f"| {'phase':<18} | {'wall s':>8} | {'peak MiB':>9} | {'peak / adapter':>14} |")
    print(f"|{'-' * 20}|{'-' * 10}|{'-' * 11}|{'-' * 16}|")
    for phase in phases:
        result = _in_subprocess(phase, workdir, threads)
        label = "breed (nora+mut)" if phase == "breed" else phase
        print(
            f"| {label:<18} | {result['seconds']:>8.3f} | {result['peak_bytes'] / 2**20:>9.1f} | "
            f"{result['peak_bytes'] / size:>14.2f} |",
            flush=True,
        )
    print(
        "breed = nora crossover + mutation, streamed; its peak includes loading both parents "
        "(targets: <= 3 s, <= 4x one adapter)."
    )


def _peft_pair(shape: Shape, rank: int) -> Any:
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=256,
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=max(shape.hidden // 128, 1),
        num_key_value_heads=max(shape.kv // 128, 1),
        head_dim=128 if shape.hidden >= 128 else shape.hidden,
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        base = LlamaForCausalLM(config)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    lora = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=targets)
    model = get_peft_model(base, lora, adapter_name="first")
    model.add_adapter("second", copy.deepcopy(lora))
    generator = make_generator(5)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.01)
    return model


def _genome_of(model: Any, adapter: str) -> Genome:
    modules = {}
    for name, module in model.base_model.model.named_modules():
        if hasattr(module, "lora_A") and adapter in module.lora_A:
            a = module.lora_A[adapter].weight.detach().clone()
            b = module.lora_B[adapter].weight.detach().clone()
            modules[name] = LoraModule(a=a, b=b, alpha=float(module.lora_alpha[adapter]))
    return Genome(modules=modules)


def peft_comparison(shape: Shape, rank: int) -> None:
    """Our factor-space svd merge against PEFT's dense SVD path, same adapters, same weights."""
    model = _peft_pair(shape, rank)
    parents = [_genome_of(model, "first"), _genome_of(model, "second")]
    start = time.perf_counter()
    model.add_weighted_adapter(["first", "second"], [0.5, 0.5], "merged", combination_type="svd")
    peft_seconds = time.perf_counter() - start
    start = time.perf_counter()
    child = crossover(parents, None, CrossoverSpec(method="svd"), make_generator(0))
    ours_seconds = time.perf_counter() - start
    worst = 0.0
    for name, module in model.base_model.model.named_modules():
        if hasattr(module, "lora_A") and "merged" in module.lora_A:
            theirs = module.get_delta_weight("merged").double()
            ours = child.modules[name].delta(False).double()
            worst = max(worst, float((ours - theirs).norm() / theirs.norm()))
    print(
        f"\nsvd merge vs PEFT add_weighted_adapter(svd), {shape.layers} layers (hidden {shape.hidden}, kv "
        f"{shape.kv}, intermediate {shape.intermediate}), rank {rank}, 2 parents"
    )
    print(f"| {'path':<28} | {'wall s':>8} |")
    print(f"|{'-' * 30}|{'-' * 10}|")
    print(f"| {'PEFT dense SVD':<28} | {peft_seconds:>8.3f} |")
    print(f"| {'nora factor-space svd':<28} | {ours_seconds:>8.3f} |")
    print(
        f"speed-up {peft_seconds / ours_seconds:.0f}x (target >= 50x); worst relative update difference "
        f"{worst:.2e}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny shapes, for smoke tests")
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument(
        "--peft-hidden", type=int, default=1024, help="hidden size of the PEFT comparison model"
    )
    parser.add_argument("--peft-layers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (breeding uses 1)")
    parser.add_argument("--skip-peft", action="store_true", help="only the throughput table")
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.phase:
        print(json.dumps(run_phase(args.phase, args.workdir)))
        return
    shape = QUICK if args.quick else MISTRAL_7B
    with tempfile.TemporaryDirectory(prefix="nora-bench-") as workdir:
        throughput_table(shape, args.rank, Path(workdir), args.threads)
    if args.skip_peft:
        return
    hidden = 128 if args.quick else args.peft_hidden
    peft_shape = Shape(
        layers=1 if args.quick else args.peft_layers,
        hidden=hidden,
        kv=hidden // 4,
        intermediate=hidden * 7 // 2,
    )
    peft_comparison(peft_shape, args.rank)


if __name__ == "__main__":
    main()
