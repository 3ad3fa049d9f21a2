"""A GPT over bytes: the network (`GPT`, plain torch) and its LightningModule (`LanguageModel`).

The network follows nanoGPT: token + learned position embeddings, pre-LayerNorm blocks of
causal self-attention and a 4x GELU MLP, a final LayerNorm, and an output head that shares
its weight with the token embedding. The vocabulary is the 256 byte values, so any text
trains without a tokenizer.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from lightning.pytorch.strategies import FSDPStrategy
from torch import nn
from torch.utils.checkpoint import checkpoint

from trainlab.checks import ConfigError
from trainlab.data.spec import DataSpec
from trainlab.models.width import Parametrization
from trainlab.optim import SchedulerSpec
from trainlab.tasks.base import TaskModule
from trainlab.tasks.epoch_metrics import EpochSums
from trainlab.tasks.task import Task

log = logging.getLogger(__name__)

LN2 = math.log(2)


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where position t sees positions <= t only."""

    def __init__(
        self, n_embd: int, n_head: int, dropout: float, scale: float | None = None
    ) -> None:
        super().__init__()
        if n_embd % n_head:
            raise ConfigError(
                f"model.net.n_embd={n_embd} is not divisible by model.net.n_head={n_head}: each "
                f"head gets n_embd / n_head channels. Give an n_embd that is a multiple of "
                f"{n_head}, or another n_head."
            )
        self.n_head = n_head
        self.scale = scale  # of q.k; None: 1/sqrt(head size)
        self.qkv = nn.Linear(n_embd, 3 * n_embd)  # queries, keys, values in one matmul
        self.proj = nn.Linear(n_embd, n_embd)  # a residual projection (scaled init)
        self.dropout = dropout
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        # (B, T, C) -> (B, heads, T, head size)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        # the fused kernel (flash / memory-efficient where available) applies the causal mask
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True,
            scale=self.scale,
        )  # fmt: skip
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.proj(y))


class MLP(nn.Module):
    def __init__(self, n_embd: int, dropout: float) -> None:
        super().__init__()
        self.fc = nn.Linear(n_embd, 4 * n_embd)
        self.proj = nn.Linear(4 * n_embd, n_embd)  # a residual projection (scaled init)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    """One transformer layer. FSDP wraps (shards) the model one `Block` at a time."""

    def __init__(
        self, n_embd: int, n_head: int, dropout: float, scale: float | None = None
    ) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd)
        self.attn = CausalSelfAttention(n_embd, n_head, dropout, scale)
        self.ln_2 = nn.LayerNorm(n_embd)
        self.mlp = MLP(n_embd, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # pre-LayerNorm: the residual stream itself is never normalized, which keeps deep
        # stacks trainable without a careful warmup
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """Decoder-only transformer: (B, T) token ids -> (B, T, vocab_size) next-token logits.

    Its width is `n_embd` (n_head stays, so the head size grows with it). Under
    `parametrization="mup"` (trainlab.models.width), with m = n_embd / base_width: the hidden
    matrices' init std is divided by sqrt(m) (variance ~ 1/fan_in), the logits' input is
    multiplied by 1/m (the head shares the embedding's weight, which keeps its scale), and
    attention scores are scaled by sqrt(base head size) / head size, 1/d_head in width.

    `output_multiplier` (α, Tensor Programs V's output multiplier) scales the logits:
    logits = α W h (α / m under μP). The tied head starts at the embedding's small 0.02 scale,
    so on a short budget α > 1 learns faster; tuned with lr at the base width, it carries over
    under μP like the lr (README, "Tune small, train large")."""

    def __init__(
        self,
        vocab_size: int = 256,
        block_size: int = 128,
        n_layer: int = 4,
        n_head: int = 4,
        n_embd: int = 128,
        dropout: float = 0.0,
        activation_checkpointing: bool = False,
        parametrization: str = "sp",
        base_width: int | None = None,
        output_multiplier: float = 1.0,
    ) -> None:
        super().__init__()
        number = isinstance(output_multiplier, int | float) and not isinstance(
            output_multiplier, bool
        )
        if not (number and 0 < output_multiplier < math.inf):
            raise ConfigError(
                f"model.net.output_multiplier={output_multiplier!r} is not a positive number: it "
                "scales the logits (1.0: none; tune it with lr at the base width, e.g. 1, 2, 4, 8)"
            )
        self.parametrization = Parametrization(parametrization, n_embd, base_width)
        m = self.parametrization.multiplier
        head_size = n_embd // n_head if n_embd % n_head == 0 else 1
        # μP's 1/d_head, equal to the usual 1/sqrt(d_head) at the base width
        attention_scale = None if m == 1.0 else 1.0 / math.sqrt(head_size * m)
        self.output_multiplier = output_multiplier / m  # the logits' input scale, α / m
        self.vocab_size = vocab_size
        self.block_size = block_size
        self.n_layer = n_layer
        self.n_embd = n_embd
        self.activation_checkpointing = activation_checkpointing

        self.wte = nn.Embedding(vocab_size, n_embd)  # token embedding
        self.wpe = nn.Embedding(block_size, n_embd)  # learned position embedding
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            Block(n_embd, n_head, dropout, attention_scale) for _ in range(n_layer)
        )
        self.ln_f = nn.LayerNorm(n_embd)
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        # weight tying: reading a token in and writing it out use one matrix. Fewer
        # parameters, and rare tokens' output rows learn from every occurrence as input.
        self.lm_head.weight = self.wte.weight

        self.apply(self._init_weights)
        # each block adds two projections to the residual stream; scaling their init by
        # 1/sqrt(2 * n_layer) keeps the stream's variance independent of depth (GPT-2)
        for name, p in self.named_parameters():
            if name.endswith("proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * n_layer))
        if m != 1.0:  # μP: hidden matrices' variance ~ 1/fan_in, from the base width's 0.02
            with torch.no_grad():
                for block in self.blocks:
                    for layer in block.modules():
                        if isinstance(layer, nn.Linear):
                            layer.weight.div_(math.sqrt(m))
        # counted now: once FSDP shards the parameters, numel() sees only this rank's shard
        self._non_embedding_params = self.num_params(non_embedding=True)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameter count (the tied head counted once); `non_embedding` leaves out positions."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.wpe.weight.numel()
        return n

    def flops_per_token(self, seq_len: int | None = None) -> int:
        """Approximate training FLOPs per token (forward + backward), nanoGPT's estimate:
        6 per parameter (2 forward, 4 backward) plus the attention scores and weighted sum,
        12 * n_layer * n_embd * seq_len. A forward pass alone is a third of it."""
        T = self.block_size if seq_len is None else seq_len
        return 6 * self._non_embedding_params + 12 * self.n_layer * self.n_embd * T

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        seq_len = idx.shape[1]
        if seq_len > self.block_size:
            raise ValueError(
                f"sequence length {seq_len} is longer than block_size={self.block_size}"
            )
        pos = torch.arange(seq_len, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))
        for block in self.blocks:
            if self.activation_checkpointing and self.training and torch.is_grad_enabled():
                # keep only the block's input; recompute its activations in the backward pass
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        x = self.ln_f(x)
        if self.output_multiplier != 1.0:
            x = x * self.output_multiplier
        return self.lm_head(x)

    @staticmethod
    def at_width(arguments: dict, factor: float) -> dict:
        """The arguments of this GPT `factor` times as wide (n_embd; heads stay)."""
        return {**arguments, "n_embd": round(arguments["n_embd"] * factor)}


class LanguageModel(TaskModule):
    """Next-byte prediction: cross-entropy per split, bits per byte, the best val loss."""

    # `logged_metrics` (LogsEpochMeans) lists what it logs, plus val/unigram_bpb, the data's
    # baseline, when the datamodule provides it

    def __init__(
        self,
        net: GPT,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: SchedulerSpec | None = None,
        weight_decay_groups: str = "split",
        task: Task | None = None,
    ) -> None:
        super().__init__(net, optimizer, scheduler, weight_decay_groups)
        if task is not None and task.kind != "language_model":
            raise ConfigError(
                f"model=gpt learns a language model, not a {task.kind} task: choose data of "
                "token sequences (data=text), or model=mlp for this data"
            )
        # plain values only, so checkpoints load with torch.load(weights_only=True)
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler", "task"])
        self._last_batch_shape: tuple[int, int] | None = None

        # sums weighted by tokens: a short last batch counts for what it holds
        self.train_metrics = EpochSums("loss")
        self.val_metrics = EpochSums("loss", "bpb")
        self.test_metrics = EpochSums("loss", "bpb")
        # val/loss_best, the lowest val/loss so far, unless the run's objective says otherwise
        self.keep_best("loss", "min")

    def check_fits(self, spec: DataSpec, data_name: str) -> None:
        """Token data whose vocabulary the embedding covers, in blocks the positions cover."""
        if spec.task != "language_model":
            raise ConfigError(
                f"model=gpt learns a language model; data={data_name} is {spec.task}: use "
                "model=mlp for it, or data of token sequences (data=text)"
            )
        if spec.vocab_size != self.net.vocab_size or spec.block_size > self.net.block_size:
            raise ConfigError(
                f"the GPT has vocab_size {self.net.vocab_size} and block_size "
                f"{self.net.block_size}; data={data_name} has {spec.vocab_size} and "
                f"{spec.block_size}: size them with ${{data_spec:vocab_size}} and "
                "${data_spec:block_size}"
            )

    @property
    def flops_per_batch(self) -> int | None:
        """FLOPs of the last batch seen, for Lightning's ThroughputMonitor (MFU):
        forward + backward in training, the forward third in validation and test."""
        if self._last_batch_shape is None:
            return None
        batch, seq_len = self._last_batch_shape
        flops = self.net.flops_per_token(seq_len) * batch * seq_len
        return flops if self.training else flops // 3

    def _step(self, batch, metrics: EpochSums, scores=None) -> torch.Tensor:
        x, y = batch
        self._last_batch_shape = tuple(x.shape)
        logits = self(x)
        # in float32 whatever the precision: a bf16 log-softmax over 256 classes is coarse
        loss = F.cross_entropy(logits.float().flatten(0, 1), y.reshape(-1))
        if "bpb" in metrics.names:
            metrics.add(y.numel(), loss=loss, bpb=loss / LN2)
        else:
            metrics.add(y.numel(), loss=loss)
        return loss

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        # the baseline to beat: a byte histogram of the train split, scored on val
        unigram = getattr(getattr(self.trainer, "datamodule", None), "unigram_bpb", None)
        if unigram is not None and not self.trainer.sanity_checking:
            self.log("val/unigram_bpb", float(unigram))

    def configure_gradient_clipping(
        self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None
    ) -> None:
        """Under FSDP each rank holds a shard of the gradients: only the wrapped root module's
        `clip_grad_norm_` computes the global norm (Lightning's FSDP precision refuses to)."""
        if gradient_clip_val and isinstance(self.trainer.strategy, FSDPStrategy):
            self.trainer.strategy.model.clip_grad_norm_(gradient_clip_val)
            return
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
