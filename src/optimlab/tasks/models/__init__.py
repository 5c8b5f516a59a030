"""Plain `nn.Module`s used by the tasks, one file per family.

The small models (logistic regression, MLP, the 1-D/2-D ConvNets, LeNet-5) use only linear, convolution,
ReLU, max-pooling and (optionally) BatchNorm layers, all of which support double backward, so
hypergradient methods can take Hessian-vector products through them. Layers are standard `torch.nn`
modules (`nn.Flatten`, not custom reshapes), which keeps them usable by K-FAC and per-sample-gradient code
that dispatches on module types.
"""

from optimlab.tasks.models.convnet import ConvNet1d, ConvNet2d
from optimlab.tasks.models.densenet import DenseNetBC
from optimlab.tasks.models.gru_repeat import GRURepeat
from optimlab.tasks.models.init import xavier_conv_init
from optimlab.tasks.models.lenet import LeNet5
from optimlab.tasks.models.logreg import LogisticRegression
from optimlab.tasks.models.lstm_lm import LSTMLanguageModel
from optimlab.tasks.models.mlp import MLP
from optimlab.tasks.models.resnet import ResNet
from optimlab.tasks.models.vgg import VGG
from optimlab.tasks.models.wide_resnet import WideResNet

__all__ = [
    "MLP",
    "VGG",
    "ConvNet1d",
    "ConvNet2d",
    "DenseNetBC",
    "GRURepeat",
    "LSTMLanguageModel",
    "LeNet5",
    "LogisticRegression",
    "ResNet",
    "WideResNet",
    "xavier_conv_init",
]
