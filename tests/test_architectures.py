"""The CNN, RNN and transformer encoders against independent references.

- CNN: the forward pass equals one written with ``torch.nn.functional`` from the state dict.
- RNN: an LSTM's last state equals a hand-written cell loop; packed padded batches give each
  sequence exactly what it gives alone (padding never reaches the cell).
- Transformer: attention equals softmax(QKᵀ/√d)V written by hand with the padding mask; a padded
  sequence gives what it gives alone; sinusoidal positions follow Vaswani et al. (2017).
- Augmentation: draws depend only on (seed, epoch, index); crop, flip and identity transforms
  equal their hand-written counterparts.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tensorsmith.data.augment import Augment, augment
from tensorsmith.models.cnn import CNN
from tensorsmith.models.rnn import RNN
from tensorsmith.models.transformer import Encoder, SelfAttention, sinusoidal_positions


def _randomise_batch_norm(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)  # type: ignore[operator]
            m.running_var.uniform_(0.5, 2.0)  # type: ignore[operator]
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.5, 0.5)


def test_cnn_forward_matches_functional() -> None:
    torch.manual_seed(0)
    model = CNN(2, (7, 9), 3, [4, 6], kernel=3, batch_norm=True, pool="max", head=[5]).eval()
    _randomise_batch_norm(model)
    sd = model.state_dict()
    x = torch.randn(4, 2, 7, 9)

    def bn(h: torch.Tensor, name: str) -> torch.Tensor:
        return F.batch_norm(
            h,
            sd[f"{name}.running_mean"],
            sd[f"{name}.running_var"],
            sd[f"{name}.weight"],
            sd[f"{name}.bias"],
            training=False,
            eps=1e-5,
        )

    h = x
    for i in range(2):
        h = F.conv2d(h, sd[f"blocks.{i}.conv1.weight"], None, stride=1, padding=1)
        h = F.relu(bn(h, f"blocks.{i}.norm1"))
        h = F.max_pool2d(h, 2, ceil_mode=True)  # 7×9 → 4×5 → 2×3
    h = h.mean(dim=(2, 3))  # global average pooling
    h = F.relu(F.linear(h, sd["head.0.weight"], sd["head.0.bias"]))
    expected = F.linear(h, sd["head.2.weight"], sd["head.2.bias"])
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)


def test_cnn_residual_block_adds_its_input() -> None:
    torch.manual_seed(0)
    model = CNN(3, (8, 8), 2, [3], batch_norm=False, pool="none", residual=True).eval()
    block = model.blocks[0]
    x = torch.randn(2, 3, 8, 8)
    h = F.relu(block.conv1(x))
    expected = F.relu(block.conv2(h) + x)  # same channels, stride 1: the skip is the identity
    with torch.no_grad():
        torch.testing.assert_close(block(x), expected)


def test_cnn_refuses_blocks_that_shrink_images_to_nothing() -> None:
    from tensorsmith import RecipeError

    with pytest.raises(RecipeError, match=r"block 2 of 3 shrinks 4×4"):
        CNN(1, (4, 4), 2, [4, 4, 4], kernel=3, padding=0, pool="none")


def test_lstm_last_state_matches_a_hand_written_cell_loop() -> None:
    torch.manual_seed(0)
    model = RNN(2, cell="lstm", hidden_size=4, n_features=3, pooling="last").eval()
    sd = model.state_dict()
    x = torch.randn(5, 6, 3)
    h = torch.zeros(5, 4)
    c = torch.zeros(5, 4)
    for t in range(6):
        gates = (
            x[:, t] @ sd["rnn.weight_ih_l0"].T
            + sd["rnn.bias_ih_l0"]
            + h @ sd["rnn.weight_hh_l0"].T
            + sd["rnn.bias_hh_l0"]
        )
        i, f, g, o = gates.chunk(4, dim=1)  # PyTorch's gate order
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
    expected = F.linear(h, sd["head.0.weight"], sd["head.0.bias"])
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_rnn_padding_never_reaches_the_cell(cell: str, pooling: str) -> None:
    torch.manual_seed(0)
    model = RNN(3, cell=cell, hidden_size=5, layers=2, bidirectional=True, pooling=pooling,
                vocab_size=20).eval()  # fmt: skip
    lengths = torch.tensor([6, 2, 4])
    ids = torch.randint(1, 20, (3, 6))
    mask = torch.arange(6) < lengths[:, None]
    padded = ids.masked_fill(~mask, 7)  # whatever sits in the padding must not matter
    with torch.no_grad():
        batch = model(padded, mask)
        for b in range(3):
            alone = model(ids[b : b + 1, : lengths[b]])
            torch.testing.assert_close(batch[b : b + 1], alone, rtol=1e-5, atol=1e-6)


def test_attention_matches_softmax_by_hand_with_the_padding_mask() -> None:
    torch.manual_seed(0)
    attn = SelfAttention(n_embd=8, n_head=2, dropout=0.0, bias=True).eval()
    x = torch.randn(2, 5, 8)
    keys = (torch.arange(5) < torch.tensor([5, 3])[:, None])[:, None, None, :]  # (B, 1, 1, T)
    q, k, v = attn.qkv(x).split(8, dim=2)
    q, k, v = (t.view(2, 5, 2, 4).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
    scores = q @ k.transpose(-2, -1) / math.sqrt(4)
    scores = scores.masked_fill(~keys, float("-inf"))
    y = (torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(2, 5, 8)
    with torch.no_grad():
        torch.testing.assert_close(attn(x, keys), attn.proj(y), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
@pytest.mark.parametrize("positions", ["learned", "sinusoidal"])
def test_encoder_padded_sequence_equals_it_alone(pooling: str, positions: str) -> None:
    torch.manual_seed(0)
    model = Encoder(3, max_length=8, n_layer=2, n_head=2, n_embd=8, pooling=pooling,
                    positions=positions, vocab_size=30).eval()  # fmt: skip
    lengths = torch.tensor([8, 3, 5])
    ids = torch.randint(1, 30, (3, 8))
    mask = torch.arange(8) < lengths[:, None]
    with torch.no_grad():
        batch = model(ids.masked_fill(~mask, 0), mask)
        for b in range(3):
            alone = model(ids[b : b + 1, : lengths[b]])
            torch.testing.assert_close(batch[b : b + 1], alone, rtol=1e-5, atol=1e-6)


def test_sinusoidal_positions_follow_the_formula() -> None:
    table = sinusoidal_positions(10, 6)
    for pos in (0, 3, 9):
        for i in range(3):
            angle = pos / 10000 ** (2 * i / 6)
            assert table[pos, 2 * i] == pytest.approx(math.sin(angle), abs=1e-6)
            assert table[pos, 2 * i + 1] == pytest.approx(math.cos(angle), abs=1e-6)


def test_encoder_refuses_sequences_longer_than_its_positions() -> None:
    model = Encoder(2, max_length=4, n_features=3)
    with pytest.raises(ValueError, match="longer than max_length=4"):
        model(torch.randn(1, 5, 3))


# ----------------------------------------------------------------------------- augmentation


def test_augmentation_depends_only_on_seed_epoch_and_index() -> None:
    spec = Augment(crop_padding=2, flip=True, rotation=15, translate=0.1)
    x = torch.randn(4, 1, 8, 8)
    a = augment(x, spec, seed=0, epoch=3, ids=[10, 11, 12, 13])
    # the same image in another batch, at another position, gets the same draw
    b = augment(x[[2]], spec, seed=0, epoch=3, ids=[12])
    torch.testing.assert_close(a[[2]], b)
    assert not torch.equal(a, augment(x, spec, seed=0, epoch=4, ids=[10, 11, 12, 13]))
    assert not torch.equal(a, augment(x, spec, seed=1, epoch=3, ids=[10, 11, 12, 13]))
    torch.testing.assert_close(a, augment(x, spec, seed=0, epoch=3, ids=[10, 11, 12, 13]))


def test_crop_and_flip_are_shifted_and_mirrored_copies() -> None:
    x = torch.arange(2 * 1 * 5 * 5, dtype=torch.float32).reshape(2, 1, 5, 5)
    flipped = augment(x, Augment(flip=True), seed=0, epoch=0, ids=range(200)[:2])
    for b in range(2):
        assert torch.equal(flipped[b], x[b]) or torch.equal(flipped[b], x[b].flip(-1))
    # over many images about half are flipped
    many = augment(x.repeat(100, 1, 1, 1), Augment(flip=True), seed=0, epoch=0, ids=range(200))
    share = sum(not torch.equal(many[i], x[i % 2]) for i in range(200)) / 200
    assert 0.35 < share < 0.65
    cropped = augment(x, Augment(crop_padding=1), seed=0, epoch=0, ids=[0, 1])
    padded = F.pad(x, (1, 1, 1, 1))
    for b in range(2):
        windows = [padded[b, :, i : i + 5, j : j + 5] for i in range(3) for j in range(3)]
        assert any(torch.equal(cropped[b], w) for w in windows)


def test_zero_rotation_and_translation_is_the_identity() -> None:
    x = torch.randn(3, 2, 6, 4)
    out = augment(x, Augment(rotation=1e-9, translate=1e-9), seed=0, epoch=0, ids=[0, 1, 2])
    torch.testing.assert_close(out, x, rtol=1e-4, atol=1e-4)
