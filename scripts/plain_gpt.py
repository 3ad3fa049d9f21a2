"""The reference for `python train.py experiment=gpt_small`: its training steps in a plain loop.

The same network class (`trainlab.models.gpt.GPT`: 4 layers, 4 heads, 128 wide, bytes in and
out) and the same data (`trainlab.data.text.ByteTextDataModule`: the running Python's stdlib
source, 1.5 MB, 10 % of the files held out, windows of 128 bytes) as the experiment, trained
with AdamW (lr 3e-3, weight decay 0.1 on matrices only, as the template's
`split_for_weight_decay`), gradient norm clipped at 1.0, batches of 32 windows reshuffled
every epoch. The template's warmup-cosine schedule is left out: it changes the lr, not the
cost of a step. No validation: this measures training throughput only.

    OMP_NUM_THREADS=1 python scripts/plain_gpt.py [--steps 60] [--warmup-steps 5]

`--warmup-steps` optimizer steps run first, untimed (first-call allocations); then `--steps`
timed ones. Prints one JSON line: tokens_per_s (steps x batch x block_size / train_s),
steps (timed), train_s, final_loss.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from trainlab.data.text import ByteTextDataModule
from trainlab.models.gpt import GPT
from trainlab.optim import split_for_weight_decay


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=60, help="timed optimizer steps")
    parser.add_argument("--warmup-steps", type=int, default=5, help="untimed steps first")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--block-size", type=int, default=128)
    parser.add_argument("--max-bytes", type=int, default=1_500_000)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument("--grad-clip", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    torch.set_num_threads(1)
    # the template's data module, used only for its bytes: a uint8 tensor of the train files
    text = ByteTextDataModule(
        block_size=args.block_size,
        batch_size=args.batch_size,
        max_bytes=args.max_bytes,
        seed=args.seed,
    )
    data = text.split_bytes()["train"]
    T = args.block_size
    windows = (len(data) - 1) // T  # window i: bytes [i*T, i*T + T], x = first T, y = last T
    offsets = torch.arange(T + 1)

    torch.manual_seed(args.seed)
    model = GPT(vocab_size=256, block_size=T, n_layer=4, n_head=4, n_embd=128, dropout=0.0)
    decay, no_decay = split_for_weight_decay(model)
    optimizer = torch.optim.AdamW(
        [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        weight_decay=args.weight_decay,
    )
    shuffle = torch.Generator().manual_seed(args.seed)

    def batches():
        while True:  # epochs
            order = torch.randperm(windows, generator=shuffle)
            for i in range(0, windows, args.batch_size):
                chunks = data[order[i : i + args.batch_size, None] * T + offsets].long()
                yield chunks[:, :-1].contiguous(), chunks[:, 1:].contiguous()

    def train_step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = model(x)
        loss = F.cross_entropy(logits.float().flatten(0, 1), y.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        optimizer.step()
        return loss

    model.train()
    stream = batches()
    for _ in range(args.warmup_steps):
        train_step(*next(stream))

    tokens = 0
    started = time.perf_counter()
    for _ in range(args.steps):
        x, y = next(stream)
        loss = train_step(x, y)
        tokens += y.numel()
    final_loss = loss.item()  # waits for the last step wherever it runs
    train_s = time.perf_counter() - started

    print(
        json.dumps(
            {
                "tokens_per_s": round(tokens / train_s, 1),
                "steps": args.steps,
                "train_s": round(train_s, 4),
                "final_loss": round(final_loss, 4),
            }
        )
    )


if __name__ == "__main__":
    main()
