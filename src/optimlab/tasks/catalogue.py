"""Every built-in task, in one explicit table: name, builder `(options, data_dir) -> Task`, options dataclass,
one-line description (`optimlab list tasks`).

A new built-in task is a builder function in its own module plus one row here. The image tasks are the
product of `vision.CATALOGUE` (dataset -> model families), one row per pair. The classification tasks
(MNIST-1D, digits, images) take the data variants' options (`variants.with_variants`).
"""

from __future__ import annotations

import dataclasses
import functools

from optimlab.tasks import digits, gru_repeat, mnist1d, multiwoz, shakespeare, snli, study, synthetic, vision, word_lm
from optimlab.tasks.registry import TaskSpec, task_spec
from optimlab.tasks.variants import with_variants


def _image_task(dataset: vision.ImageDataset, family: vision.ModelFamily) -> TaskSpec:
    """`<dataset>_<family>`: the family's model options plus the dataset's data options."""
    name = f"{dataset.name}_{family.name}"
    data_options = vision.AugmentedImageOptions if dataset.augment else vision.ImageOptions
    options = dataclasses.make_dataclass(
        f"{''.join(p.title() for p in name.split('_'))}Options", [], bases=(family.options, data_options)
    )
    options.__module__ = __name__
    build = functools.partial(vision.build_image_task, name, dataset, family)
    return with_variants(task_spec(name, build, options, f"{dataset.title}, {family.description}"))


def _classification(*args) -> TaskSpec:
    return with_variants(task_spec(*args))


TASKS: list[TaskSpec] = [
    _classification("mnist1d_logreg", mnist1d.build_logreg, mnist1d.MNIST1DOptions, "MNIST-1D, logistic regression"),
    _classification("mnist1d_mlp", mnist1d.build_mlp, mnist1d.MNIST1DMLPOptions, "MNIST-1D, MLP (2 x 100 ReLU)"),
    _classification("mnist1d_cnn", mnist1d.build_cnn, mnist1d.MNIST1DCNNOptions, "MNIST-1D, 1-D ConvNet (3 strided convs)"),
    _classification("digits_logreg", digits.build_logreg, digits.DigitsOptions, "sklearn digits (8x8), logistic regression"),
    _classification("digits_mlp", digits.build_mlp, digits.DigitsMLPOptions, "sklearn digits (8x8), MLP (2 x 128 ReLU)"),
    _classification("digits_cnn", digits.build_cnn, digits.DigitsCNNOptions, "sklearn digits (8x8), 2-D ConvNet (16, 32)"),
    _classification("digits_resnet", digits.build_resnet, digits.DigitsResNetOptions,
                    "sklearn digits (8x8), ResNet-8 with BatchNorm (width 8)"),
    task_spec("shakespeare_lstm", shakespeare.build, shakespeare.ShakespeareOptions,
              "Tiny Shakespeare characters, LSTM LM"),
    task_spec("gru_repeat", gru_repeat.build, gru_repeat.GRURepeatOptions,
              "repeat (copy) strings with an encoder-decoder GRU"),
    task_spec("quadratic", synthetic.build_quadratic, synthetic.QuadraticOptions,
              "noisy quadratic, ill-conditioned (generated)"),
    task_spec("rosenbrock", synthetic.build_rosenbrock, synthetic.RosenbrockOptions,
              "Rosenbrock function, optionally noisy (2 params)"),
    task_spec("logreg", synthetic.build_logreg, synthetic.LogRegOptions,
              "binary logistic regression on Gaussian data (generated)"),
    task_spec("nqm", study.build_nqm, synthetic.QuadraticOptions,
              "noisy quadratic model, variables in a Linear layer"),
    task_spec("random_features", study.build_random_features, study.RandomFeaturesOptions,
              "student/teacher random-features regression"),
    task_spec("ptb_lstm", word_lm.build_ptb, word_lm.WordLMOptions, "Penn Treebank words, LSTM LM (truncated BPTT)"),
    task_spec("wikitext2_lstm", word_lm.build_wikitext2, word_lm.WordLMOptions,
              "WikiText-2 words, LSTM LM (truncated BPTT)"),
    task_spec("wikitext103_lstm", word_lm.build_wikitext103, word_lm.WordLMOptions,
              "WikiText-103 words, LSTM LM (truncated BPTT)"),
    task_spec("snli_lstm", snli.build_lstm, snli.SNLIOptions, "SNLI sentence pairs, LSTM encoder (InferSent classifier)"),
    task_spec("snli_infersent", snli.build_infersent, snli.SNLIOptions,
              "SNLI sentence pairs, InferSent max-pooled BiLSTM"),
    task_spec("snli_convnet", snli.build_convnet, snli.SNLIOptions, "SNLI sentence pairs, hierarchical ConvNet encoder"),
    task_spec("multiwoz_bilstm", multiwoz.build_bilstm, multiwoz.MultiWOZOptions, "MultiWOZ user-turn domain, Bi-LSTM"),
    task_spec("multiwoz_roberta", multiwoz.build_roberta, multiwoz.MultiWOZOptions,
              "MultiWOZ user-turn domain, RoBERTa-base (local weights)"),
    *(
        _image_task(vision.DATASETS[dataset], vision.FAMILIES[family])
        for dataset, families in vision.CATALOGUE.items()
        for family in families
    ),
]  # fmt: skip
