"""Text as bytes for a language model: any file or folder, by default Python's own stdlib.

The vocabulary is the 256 byte values, so nothing (no tokenizer, no corpus) is downloaded:
without `path` the corpus is the standard library's `*.py` files of the Python that runs,
found at run time. Files are split into train and val whole, so no val file leaks into
training through a shared window.
"""

from __future__ import annotations

import math
import os
import sysconfig
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from trainlab.checks import ConfigError, check_optional, check_split_fractions, check_whole_number
from trainlab.data.batching import InMemoryDataModule
from trainlab.data.spec import DataSpec

# folders of a stdlib tree that are not the standard library, or not source
SKIPPED_DIRS = {"site-packages", "dist-packages", "__pycache__"}


class ByteWindows(Dataset):
    """Windows of `block_size + 1` bytes, one every `block_size`: x is the first
    `block_size`, y the same shifted by one. Consecutive windows share one byte, so every
    byte but the first is a target exactly once per epoch.

    Map-style with a batched `__getitems__` (one gather per batch, no collate), so
    Lightning can still put a DistributedSampler in front of it.
    """

    def __init__(self, data: torch.Tensor, block_size: int) -> None:
        self.data = data
        self.block_size = block_size
        self.offsets = torch.arange(block_size + 1)

    def __len__(self) -> int:
        return max(0, (len(self.data) - 1) // self.block_size)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        start = index * self.block_size
        chunk = self.data[start : start + self.block_size + 1].long()
        return chunk[:-1], chunk[1:]

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        starts = torch.as_tensor(indices) * self.block_size
        chunks = self.data[starts[:, None] + self.offsets].long()  # (B, block_size + 1)
        return chunks[:, :-1].contiguous(), chunks[:, 1:].contiguous()


def _is_text(path: Path) -> bool:
    """No NUL byte in the first 8 KiB: the usual test for 'not binary'."""
    with open(path, "rb") as f:
        return b"\0" not in f.read(8192)


class ByteTextDataModule(InMemoryDataModule):
    """Byte-level language modelling on a file or a folder of text files.

    `path`: a text file, or a folder searched recursively for `pattern` (default: every
    text file, hidden ones skipped); None = the running Python's standard library (`*.py`).
    `max_bytes` caps what is read, taking files in sorted order (None = everything).
    Folders are split by file: the files are shuffled with `seed` and the first ones, about
    `val_fraction` of the bytes, are validation. A single file is split by position: its
    last `val_fraction` is validation. The test stage evaluates the validation split again.

    After `setup`, `unigram_bpb` is the baseline to beat: bits per byte on val of the
    train split's byte frequencies (add-one smoothed).
    """

    vocab_size = 256

    def __init__(
        self,
        path: str | None = None,
        block_size: int = 128,
        batch_size: int = 32,
        val_fraction: float = 0.1,
        max_bytes: int | None = 2_000_000,
        seed: int = 0,
        num_workers: int = 0,
        pattern: str | None = None,
    ) -> None:
        super().__init__()
        check_split_fractions(val_fraction=val_fraction)
        check_whole_number("data.block_size", block_size, 1, "128")
        check_optional(check_whole_number, "data.max_bytes", max_bytes, 1, "2000000")
        self.path = path
        self.block_size = block_size
        self.batch_size = batch_size
        self.val_fraction = val_fraction
        self.max_bytes = max_bytes
        self.seed = seed
        self.num_workers = num_workers
        self.pattern = pattern
        self.splits: dict[str, torch.Tensor] | None = None
        self.unigram_bpb: float | None = None
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None

    @property
    def spec(self) -> DataSpec:
        """Blocks of `block_size` byte ids: a language model of a 256-token vocabulary."""
        return DataSpec("language_model", (self.block_size,), vocab_size=self.vocab_size)

    # --- the corpus ------------------------------------------------------------------------

    def root(self) -> Path:
        if self.path is None:
            return Path(sysconfig.get_paths()["stdlib"])
        root = Path(self.path).expanduser()
        if not root.exists():
            raise ConfigError(
                f"data.path={self.path!r} does not exist (resolved to {root.resolve()}): give a "
                "text file or a folder of text files, or data.path=null for the Python "
                "standard library's source."
            )
        return root

    def files(self) -> list[Path]:
        """The corpus files in sorted order, up to the ones that reach `max_bytes`."""
        root = self.root()
        pattern = self.pattern or ("*.py" if self.path is None else "*")
        if root.is_file():
            candidates = [root]
        else:
            candidates = []
            for folder, dirs, names in os.walk(root):
                dirs[:] = [d for d in dirs if d not in SKIPPED_DIRS and not d.startswith(".")]
                here = Path(folder)
                candidates += [
                    here / n for n in names if not n.startswith(".") and Path(n).match(pattern)
                ]
            candidates.sort(key=lambda p: p.relative_to(root).as_posix())
        files, total = [], 0
        for f in candidates:
            if self.max_bytes is not None and total >= self.max_bytes:
                break
            if f.is_file() and f.stat().st_size > 0 and _is_text(f):
                files.append(f)
                total += f.stat().st_size
        if not files:
            raise ConfigError(
                f"data.path={self.path!r} holds no text files (searched {root} for "
                f"{pattern!r}; empty and binary files do not count): point "
                "data.path at a text file or a folder with some."
            )
        return files

    def split_bytes(self) -> dict[str, torch.Tensor]:
        """{"train", "val"}: uint8 tensors, the same for the same files and seed."""
        if self.splits is not None:
            return self.splits
        files = self.files()
        contents = [f.read_bytes() for f in files]
        if self.max_bytes is not None:  # cut the last file at the cap
            excess = sum(map(len, contents)) - self.max_bytes
            if excess > 0:
                contents[-1] = contents[-1][: len(contents[-1]) - excess]
        total = sum(map(len, contents))
        if len(contents) == 1:
            cut = len(contents[0]) - math.ceil(self.val_fraction * len(contents[0]))
            train, val = contents[0][:cut], contents[0][cut:]
        else:
            order = np.random.default_rng(self.seed).permutation(len(contents))
            val_parts, val_bytes = [], 0
            # whole files to val until it holds val_fraction of the bytes; one stays for train
            for i in order[:-1]:
                if val_bytes >= self.val_fraction * total:
                    break
                val_parts.append(i)
                val_bytes += len(contents[i])
            in_val = set(val_parts)
            val = b"".join(contents[i] for i in val_parts)
            train = b"".join(c for i, c in enumerate(contents) if i not in in_val)
        need = self.block_size + 1
        if len(train) < need or len(val) < need:
            raise ConfigError(
                f"data.path={self.path!r} is too small for data.block_size={self.block_size}: "
                f"{len(files)} file(s), {total} bytes split into {len(train)} train and "
                f"{len(val)} val bytes, but each split needs at least {need} bytes (one window). "
                "Add text, raise data.max_bytes or data.val_fraction, or lower data.block_size."
            )

        def as_tensor(b: bytes) -> torch.Tensor:
            return torch.frombuffer(bytearray(b), dtype=torch.uint8)

        self.splits = {"train": as_tensor(train), "val": as_tensor(val)}
        return self.splits

    def train_size(self) -> int:
        """Training windows, known before `setup` (for checking `batch_size`)."""
        return len(ByteWindows(self.split_bytes()["train"], self.block_size))

    @staticmethod
    def unigram_bits_per_byte(train: torch.Tensor, val: torch.Tensor) -> float:
        """Cross-entropy (bits per byte) on `val` of `train`'s byte histogram, add-one smoothed."""
        counts = torch.bincount(train.long(), minlength=256).double() + 1.0
        log2_p = torch.log2(counts / counts.sum())
        val_counts = torch.bincount(val.long(), minlength=256).double()
        return float(-(val_counts * log2_p).sum() / val_counts.sum())

    # --- Lightning hooks -------------------------------------------------------------------

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        splits = self.split_bytes()
        self.train_set = ByteWindows(splits["train"], self.block_size)
        self.val_set = ByteWindows(splits["val"], self.block_size)
        self.unigram_bpb = self.unigram_bits_per_byte(splits["train"], splits["val"])

    def test_dataloader(self) -> DataLoader:
        # no third split: held-out files are scarce, and test reports the best checkpoint
        # on them (at the epoch end the val numbers are of the last weights)
        return self._loader(self.val_set)
