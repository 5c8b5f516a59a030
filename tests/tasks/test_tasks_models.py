"""The model zoo: output shapes on small inputs, published parameter counts, invalid configurations."""

from __future__ import annotations

import pytest
import torch

from optimlab.tasks.models import (
    MLP,
    VGG,
    ConvNet1d,
    ConvNet2d,
    DenseNetBC,
    GRURepeat,
    LeNet5,
    LogisticRegression,
    LSTMLanguageModel,
    ResNet,
    WideResNet,
)


@pytest.mark.parametrize(
    "make",
    [
        lambda c: ResNet(8, c, 3, width=4),
        lambda c: ResNet(14, c, 3, width=4, batch_norm=False),
        lambda c: ResNet(18, c, 3, width=2),
        lambda c: VGG("vgg11", c, 3, width=2),
        lambda c: WideResNet(10, 1, c, 3),
        lambda c: WideResNet(10, 2, c, 3, dropout=0.3),
        lambda c: DenseNetBC(10, 4, 0.5, c, 3),
        lambda c: LeNet5(3, 32, c),
        lambda c: ConvNet2d(3, 32, c, [4, 8], 16, batch_norm=True),
        lambda c: MLP(3 * 32 * 32, [8], c),
        lambda c: LogisticRegression(3 * 32 * 32, c),
    ],
)
@pytest.mark.parametrize("classes", [10, 100])
def test_image_models_map_a_32x32_batch_to_logits(make, classes):
    torch.manual_seed(0)
    model = make(classes)
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, classes)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_single_channel_28x28_models():
    x = torch.randn(2, 1, 28, 28)
    for model in (LeNet5(1, 28, 10), ConvNet2d(1, 28, 10, [4, 8], 0), MLP(784, [16, 16], 10)):
        assert model(x).shape == (2, 10)


def test_convnet1d_accepts_flat_and_channel_inputs():
    model = ConvNet1d(40, 10, [4, 4, 4])
    x = torch.randn(3, 40)
    assert model(x).shape == (3, 10)
    torch.testing.assert_close(model(x), model(x[:, None]))


# Published parameter counts (He et al. 2016 table 6; Zagoruyko & Komodakis 2016; Huang et al. 2017 table 2;
# ResNet-18 / VGG-11 as in kuangliu/pytorch-cifar). Built on the meta device: no memory, no time.
@pytest.mark.parametrize(
    ("make", "millions"),
    [
        (lambda: ResNet(20), 0.27),
        (lambda: ResNet(56), 0.85),
        (lambda: ResNet(110), 1.7),
        (lambda: ResNet(18), 11.17),
        (lambda: VGG("vgg11"), 9.23),
        (lambda: WideResNet(28, 10), 36.5),
        (lambda: WideResNet(16, 8), 11.0),
        (lambda: DenseNetBC(100, 12), 0.8),
        (lambda: DenseNetBC(190, 40), 25.6),
    ],
)
def test_default_architectures_have_their_published_sizes(make, millions):
    with torch.device("meta"):
        model = make()
    count = sum(p.numel() for p in model.parameters()) / 1e6
    assert count == pytest.approx(millions, rel=0.04)


@pytest.mark.parametrize(
    "make",
    [
        lambda: ResNet(19),
        lambda: ResNet(4),
        lambda: WideResNet(27),
        lambda: DenseNetBC(99),
        lambda: VGG("vgg12"),
        lambda: LeNet5(1, 12),
        lambda: MLP(4, [4], 2, activation="gelu"),
        lambda: ConvNet1d(2, 10, [4]),
    ],
)
def test_impossible_configurations_are_value_errors(make):
    with pytest.raises(ValueError):
        make()


def test_lstm_language_model_shapes():
    model = LSTMLanguageModel(vocab=11, embedding_size=4, hidden=8, layers=2, dropout=0.1)
    out = model(torch.randint(0, 11, (3, 7)))
    assert out.shape == (3, 7, 11)


def test_gru_repeat_encoder_ignores_padding():
    """The memory of a string does not depend on what follows its last symbol (padding)."""
    torch.manual_seed(0)
    model = GRURepeat(symbols=5, state_size=8, embedding_size=4)
    x = torch.tensor([[1, 2, 3, 0, 0], [1, 2, 3, 4, 4]])
    lengths = torch.tensor([3, 3])
    memory = model.encode(x, lengths)
    torch.testing.assert_close(memory[0], memory[1])
    # ...and equals running the GRU on the unpadded string.
    _, h = model.gru(model.embedding(x[:1, :3]))
    torch.testing.assert_close(memory[0], h[0, 0])


def test_gru_repeat_decoder_is_teacher_forced_and_causal():
    torch.manual_seed(0)
    model = GRURepeat(symbols=5, state_size=8, embedding_size=4)
    x = torch.tensor([[1, 2, 3, 4]])
    lengths = torch.tensor([4])
    a = model(x, lengths, x)
    # Changing the last target changes no logits (the decoder input is SOS + targets[:-1])...
    b = model(x, lengths, torch.tensor([[1, 2, 3, 0]]))
    torch.testing.assert_close(a, b)
    # ...changing the second changes logits from position 2 on only.
    c = model(x, lengths, torch.tensor([[1, 0, 3, 4]]))
    torch.testing.assert_close(a[:, :2], c[:, :2])
    assert not torch.allclose(a[:, 2:], c[:, 2:])
    # Without input, the decoder ignores the targets entirely.
    model.no_input = True
    torch.testing.assert_close(model(x, lengths, x), model(x, lengths, torch.zeros_like(x)))
