"""The byte-level GPT, its LightningModule and the text DataModule; tiny end-to-end runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import trainlab.run
from trainlab.checks import ConfigError
from trainlab.data.text import ByteTextDataModule
from trainlab.models.gpt import GPT, LanguageModel

WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]
WORDS += ["iota", "kappa", "lambda", "mu", "nu", "xi", "omicron"]


def tiny_gpt(**kwargs) -> GPT:
    torch.manual_seed(0)
    return GPT(**{"block_size": 32, "n_layer": 2, "n_head": 2, "n_embd": 32, **kwargs})


def as_batch(text: bytes, block_size: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    data = torch.tensor(list(text), dtype=torch.long)
    starts = torch.arange(n) * 3
    chunks = torch.stack([data[s : s + block_size + 1] for s in starts])
    return chunks[:, :-1], chunks[:, 1:]


@pytest.fixture
def corpus(tmp_path) -> Path:
    """A folder of 8 text files (plus a binary and a hidden one, to be skipped), ~28 KB."""
    folder = tmp_path / "corpus"
    (folder / "sub").mkdir(parents=True)
    for i in range(8):
        lines = [f"# file {i} line {j}: " + " ".join(WORDS[(i + j) % 15 :]) for j in range(60)]
        where = folder / "sub" if i % 2 else folder
        (where / f"doc{i}.txt").write_text("\n".join(lines) + "\n")
    (folder / "image.bin").write_bytes(bytes(range(256)) * 4)
    (folder / ".hidden.txt").write_text("never read\n" * 100)
    return folder


# --- the network ---------------------------------------------------------------------------


def test_forward_shape_and_loss_falls():
    net = tiny_gpt()
    x, y = as_batch(b"hello world! the quick brown fox. " * 20, block_size=32, n=8)
    assert net(x).shape == (8, 32, 256)
    optimizer = torch.optim.AdamW(net.parameters(), lr=5e-3)
    losses = []
    for _ in range(30):
        loss = F.cross_entropy(net(x).flatten(0, 1), y.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(math.log(256), abs=0.3)  # uniform guess at init
    assert losses[-1] < 0.4 * losses[0]  # 5.5 -> 1.3 measured
    assert all(b < a for a, b in zip(losses, losses[5:], strict=False))  # falling, not just noise


def test_head_is_tied_to_the_embedding():
    net = tiny_gpt()
    assert net.lm_head.weight is net.wte.weight
    # counted once: 2 embeddings, 2 blocks of 12*C^2 + 13*C, final norm
    C = 32
    assert net.num_params() == 256 * C + 32 * C + 2 * (12 * C * C + 13 * C) + 2 * C
    assert net.num_params(non_embedding=True) == net.num_params() - 32 * C
    assert net.flops_per_token() == 6 * net.num_params(non_embedding=True) + 12 * 2 * C * 32


def test_attention_is_causal():
    net = tiny_gpt().eval()
    x = torch.randint(0, 256, (2, 32))
    changed = x.clone()
    changed[:, 20] = (x[:, 20] + 1) % 256
    with torch.no_grad():
        before, after = net(x), net(changed)
    torch.testing.assert_close(before[:, :20], after[:, :20])
    assert not torch.allclose(before[:, 20:], after[:, 20:])


def test_activation_checkpointing_gives_the_same_loss_and_gradients():
    x, y = as_batch(b"checkpoint me, then recompute me. " * 10, block_size=32, n=4)
    grads, losses = [], []
    for flag in (False, True):
        net = tiny_gpt(activation_checkpointing=flag).train()
        loss = F.cross_entropy(net(x).flatten(0, 1), y.reshape(-1))
        loss.backward()
        losses.append(loss.detach())
        grads.append([p.grad for p in net.parameters()])
    torch.testing.assert_close(losses[0], losses[1])
    for plain, checkpointed in zip(*grads, strict=True):
        torch.testing.assert_close(plain, checkpointed)


def test_language_model_saves_plain_hparams_and_reports_flops():
    module = LanguageModel(tiny_gpt(), optimizer=torch.optim.AdamW)
    assert dict(module.hparams) == {"weight_decay_groups": "split"}
    assert module.flops_per_batch is None  # nothing seen yet
    x, y = as_batch(b"flops " * 50, block_size=32, n=4)
    module.train()
    module._step((x, y), module.train_metrics)
    assert module.flops_per_batch == module.net.flops_per_token(32) * 4 * 32
    module.eval()
    assert module.flops_per_batch == module.net.flops_per_token(32) * 4 * 32 // 3


# --- the data ------------------------------------------------------------------------------


def test_folder_is_split_by_whole_files_deterministically(corpus):
    dm = ByteTextDataModule(path=str(corpus), block_size=16, batch_size=4, seed=0)
    splits = dm.split_bytes()
    train, val = (bytes(splits[k].tolist()) for k in ("train", "val"))
    texts = sorted(corpus.rglob("doc*.txt"))
    assert len(train) + len(val) == sum(f.stat().st_size for f in texts)  # bin, hidden skipped
    in_val = [f.read_bytes() in val for f in texts]
    assert all((f.read_bytes() in train) != v for f, v in zip(texts, in_val, strict=True))
    assert 1 <= sum(in_val) < len(texts)
    assert 0.1 <= len(val) / (len(train) + len(val)) < 0.3

    again = ByteTextDataModule(path=str(corpus), block_size=16, seed=0).split_bytes()
    assert torch.equal(again["val"], splits["val"])
    others = [ByteTextDataModule(path=str(corpus), seed=s).split_bytes()["val"] for s in (1, 2)]
    assert any(not torch.equal(o, splits["val"]) for o in others)


def test_windows_train_size_and_unigram_baseline(corpus):
    dm = ByteTextDataModule(path=str(corpus), block_size=16, batch_size=4, seed=0)
    size = dm.train_size()  # before setup
    dm.setup("fit")
    assert size == len(dm.train_set) == (len(dm.splits["train"]) - 1) // 16
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == y.shape == (4, 16) and x.dtype == y.dtype == torch.long
    x, y = next(iter(dm.val_dataloader()))
    torch.testing.assert_close(x[:, 1:], y[:, :-1])  # y is x shifted by one
    torch.testing.assert_close(x[0], dm.val_set[0][0])
    torch.testing.assert_close(y[1], dm.val_set[1][1])
    assert 0 < dm.unigram_bpb < 8 and math.isfinite(dm.unigram_bpb)


def test_single_file_is_split_by_position_and_max_bytes_caps(tmp_path):
    path = tmp_path / "one.txt"
    path.write_bytes(bytes(range(32, 127)) * 100)
    splits = ByteTextDataModule(path=str(path), block_size=8, val_fraction=0.2).split_bytes()
    data = path.read_bytes()
    assert bytes(splits["val"].tolist()) == data[len(data) - len(splits["val"]) :]
    assert len(splits["val"]) == math.ceil(0.2 * len(data))
    capped = ByteTextDataModule(path=str(path), block_size=8, max_bytes=1000).split_bytes()
    assert len(capped["train"]) + len(capped["val"]) == 1000


def test_default_corpus_is_the_stdlib():
    dm = ByteTextDataModule(max_bytes=30_000)
    files = dm.files()
    assert files and all(f.suffix == ".py" and "site-packages" not in f.parts for f in files)


def test_bad_paths_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        ByteTextDataModule(path=str(tmp_path / "nowhere")).train_size()
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no text files"):
        ByteTextDataModule(path=str(tmp_path / "empty")).train_size()
    (tmp_path / "small.txt").write_text("too short\n")
    with pytest.raises(ConfigError, match="too small"):
        ByteTextDataModule(path=str(tmp_path / "small.txt"), block_size=128).train_size()


# --- end to end ----------------------------------------------------------------------------


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_gpt_small_trains_end_to_end(compose_in, corpus, precision):
    cfg = compose_in(
        "experiment=gpt_small",
        "logger=none",
        "callbacks=none",
        f"data.path={corpus}",
        "data.max_bytes=20000",
        "model.net.n_layer=1",
        "model.net.n_embd=32",
        "model.net.n_head=2",
        "max_epochs=1",
        f"precision={precision}",
    )
    objective = trainlab.run.train(cfg)
    record = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert record["status"] == "completed"
    metrics = record["metrics"]
    assert objective == pytest.approx(metrics["val/loss_best"])
    assert metrics["val/bpb"] == pytest.approx(metrics["val/loss"] / math.log(2), rel=1e-5)
    assert 0 < metrics["val/unigram_bpb"] < 8
    assert {"train/loss", "test/loss", "test/bpb"} <= metrics.keys()
