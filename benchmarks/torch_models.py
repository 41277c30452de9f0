"""Plain-PyTorch twins of the labs' Keras models, for the step-time benchmark.

Each twin has the architecture of its Keras model (same layers, same parameter
count, tested in tests/test_benchmarks.py) and is trained the plain-PyTorch way:
NCHW tensors, `torch.optim.Adam`, a hand-written loop. Differences that do not change
the work per step:

- Convolutions use torch's symmetric padding where Keras' "same" pads more on the
  bottom/right (same output sizes, same cost).
- The classifiers end in logits and `cross_entropy`; the Keras models end in a softmax
  and `sparse_categorical_crossentropy` on probabilities (the same loss).
- Keras' BatchNormalization epsilon (1e-3) is used in the lab-1 twin, torchvision's
  (1e-5) in the ResNet18 twin, like their Keras counterparts.
"""

import importlib.util
import math
import pathlib

import torch
from torch import nn
from torch.nn import functional

CIFAR_FILTERS = (8, 16, 32)
CIFAR_CLASSES = 10
CIFAR_DENSE_UNITS = 128
CIFAR_DROPOUT = 0.3
KERAS_BATCH_NORM_EPSILON = 1e-3
TORCH_BATCH_NORM_MOMENTUM = 0.1  # = Keras' momentum 0.9 of the course's models
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MNIST_CLASSES = 10
RESNET_STAGE_CHANNELS = (64, 128, 256, 512)  # course_lib.resnet.STAGE_FILTERS
RESNET_STAGES = len(RESNET_STAGE_CHANNELS)
DENSE_VAE_HIDDEN_UNITS = (512, 256)  # lab 3's HIDDEN_UNITS
DENSE_VAE_PIXELS = 28 * 28
CONV_VAE_STAGE_FILTERS = (32, 64, 128)
CONV_VAE_HIDDEN_UNITS = 128
CONV_VAE_START_SIZE = 4
PROBABILITY_EPSILON = 1e-7
MIN_PIXEL_VARIANCE = 1e-4
INITIAL_PIXEL_VARIANCE = 1.0 / 12.0
PIXEL_VARIANCE_MOMENTUM = 0.9
TORCH_RESNET18_PATH = pathlib.Path(__file__).resolve().parent.parent / "tests" / "torch_resnet18.py"


def load_torch_resnet18_module():
    """Imports tests/torch_resnet18.py (torchvision's ResNet18 in plain PyTorch) by path."""
    spec = importlib.util.spec_from_file_location("torch_resnet18", TORCH_RESNET18_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class CifarCNN(nn.Module):
    """Twin of `course_lib.cnn.build_cifar_cnn` (two 3x3 convolutions per block).

    Args:
        batch_norm: a BatchNorm2d after every convolution (then bias-free), as in Keras.
        filters: filters of each block.
        num_classes: classes of the output layer (logits).
    """

    def __init__(self, batch_norm=False, filters=CIFAR_FILTERS, num_classes=CIFAR_CLASSES):
        super().__init__()
        units = []
        in_channels = 3
        for block_filters in filters:
            for _ in range(2):
                units.append(nn.Conv2d(in_channels, block_filters, 3, padding=1, bias=not batch_norm))
                if batch_norm:
                    units.append(
                        nn.BatchNorm2d(
                            block_filters,
                            eps=KERAS_BATCH_NORM_EPSILON,
                            momentum=TORCH_BATCH_NORM_MOMENTUM,
                        )
                    )
                units.append(nn.ReLU())
                in_channels = block_filters
            units.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*units)
        side = 32 // 2 ** len(filters)
        self.dense = nn.Linear(in_channels * side * side, CIFAR_DENSE_UNITS)
        self.dropout = nn.Dropout(CIFAR_DROPOUT)
        self.predictions = nn.Linear(CIFAR_DENSE_UNITS, num_classes)

    def forward(self, images):
        features = torch.flatten(self.features(images), 1)
        return self.predictions(self.dropout(functional.relu(self.dense(features))))


class MnistResNet18(nn.Module):
    """Twin of `course_lib.resnet.build_mnist_resnet18` (without augmentation).

    gray (N, 1, 28, 28) -> 3 channels -> bilinear resize -> ImageNet normalization ->
    ResNet18 (tests/torch_resnet18.py), its first `stages` stages, with a `num_classes`
    classifier (logits).

    Args:
        image_size: side of the resized images.
        num_classes: classes of the classifier.
        stages: residual stages kept (1-4); the later ones become identities.
    """

    def __init__(self, image_size, num_classes=MNIST_CLASSES, stages=RESNET_STAGES):
        super().__init__()
        self.image_size = image_size
        self.backbone = load_torch_resnet18_module().ResNet18(num_classes=num_classes)
        for stage in range(stages + 1, RESNET_STAGES + 1):
            setattr(self.backbone, f"layer{stage}", nn.Identity())
        self.backbone.fc = nn.Linear(RESNET_STAGE_CHANNELS[stages - 1], num_classes)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images):
        images = images.repeat(1, 3, 1, 1)
        images = functional.interpolate(
            images, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False
        )
        return self.backbone((images - self.mean) / self.std)

    def batch_norm_modules(self):
        """Returns the backbone's BatchNorm2d modules."""
        return [module for module in self.modules() if isinstance(module, nn.BatchNorm2d)]

    def freeze_batch_norm(self):
        """Fine-tuning as in lab 2: BN layers fixed (no gradients) and in inference mode.

        Call it after every `train()`, which would put BN back into training mode.
        """
        for module in self.batch_norm_modules():
            module.eval()
            for parameter in module.parameters():
                parameter.requires_grad_(False)
        return self


def reparameterize(z_mean, z_log_var):
    """`z = z_mean + exp(z_log_var / 2) * epsilon`, `epsilon ~ N(0, I)`."""
    return z_mean + torch.exp(0.5 * z_log_var) * torch.randn_like(z_mean)


def kl_divergence(z_mean, z_log_var):
    """KL(q(z|x) || N(0, I)) per example, like `course_lib.vae.kl_divergence`."""
    return 0.5 * (torch.expm1(z_log_var) - z_log_var + z_mean.square()).sum(dim=1)


def _relu_stack(widths):
    """Linear + ReLU layers through the given widths."""
    layers = []
    for width_in, width_out in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(width_in, width_out), nn.ReLU()]
    return nn.Sequential(*layers)


class DenseVAE(nn.Module):
    """Twin of lab 3's VAE: 784 -> 512 -> 256 -> (z_mean, z_log_var) and 2 -> 256 -> 512 -> 784, Bernoulli.

    Args:
        latent_dim: size of the latent space.
    """

    def __init__(self, latent_dim=2):
        super().__init__()
        widths = (DENSE_VAE_PIXELS, *DENSE_VAE_HIDDEN_UNITS)
        self.hidden = _relu_stack(widths)
        self.z_mean = nn.Linear(widths[-1], latent_dim)
        self.z_log_var = nn.Linear(widths[-1], latent_dim)
        self.decoder = nn.Sequential(
            _relu_stack((latent_dim, *reversed(DENSE_VAE_HIDDEN_UNITS))),
            nn.Linear(widths[1], DENSE_VAE_PIXELS),
            nn.Sigmoid(),
        )

    def losses(self, images):
        """Per-image reconstruction NLL and KL (nats), `(batch,)` each."""
        pixels = torch.flatten(images, 1)
        features = self.hidden(pixels)
        z_mean, z_log_var = self.z_mean(features), self.z_log_var(features)
        probabilities = self.decoder(reparameterize(z_mean, z_log_var))
        probabilities = probabilities.clamp(PROBABILITY_EPSILON, 1.0 - PROBABILITY_EPSILON)
        reconstruction = -(
            pixels * torch.log(probabilities) + (1.0 - pixels) * torch.log1p(-probabilities)
        ).sum(dim=1)
        return reconstruction, kl_divergence(z_mean, z_log_var)


class ConvVAE(nn.Module):
    """Twin of `course_lib.vae` `build_encoder`/`build_decoder` for (32, 32, 3), Gaussian.

    Encoder: three stride-2 3x3 convolutions (32, 64, 128, ReLU) -> Dense(128, ReLU)
    -> z_mean, z_log_var. Decoder: Dense(128) -> Dense(4*4*128) -> two stride-2
    transposed convolutions (64, 32, ReLU) -> one to 3 channels (sigmoid). The pixel
    variance of each batch is its mean squared error; a running average is kept in
    the `pixel_variance` buffer, as `course_lib.vae.VAE` does.

    Args:
        latent_dim: size of the latent space.
    """

    def __init__(self, latent_dim=32):
        super().__init__()
        stages = []
        in_channels = 3
        for filters in CONV_VAE_STAGE_FILTERS:
            stages += [nn.Conv2d(in_channels, filters, 3, stride=2, padding=1), nn.ReLU()]
            in_channels = filters
        self.encoder_convolutions = nn.Sequential(*stages)
        flat_size = in_channels * CONV_VAE_START_SIZE**2
        self.encoder_hidden = nn.Linear(flat_size, CONV_VAE_HIDDEN_UNITS)
        self.z_mean = nn.Linear(CONV_VAE_HIDDEN_UNITS, latent_dim)
        self.z_log_var = nn.Linear(CONV_VAE_HIDDEN_UNITS, latent_dim)
        self.decoder_dense = nn.Sequential(
            nn.Linear(latent_dim, CONV_VAE_HIDDEN_UNITS),
            nn.ReLU(),
            nn.Linear(CONV_VAE_HIDDEN_UNITS, flat_size),
            nn.ReLU(),
        )
        upsampling = []
        for filters in reversed(CONV_VAE_STAGE_FILTERS[:-1]):
            upsampling += [self._upsample(in_channels, filters), nn.ReLU()]
            in_channels = filters
        upsampling += [self._upsample(in_channels, 3), nn.Sigmoid()]
        self.decoder_convolutions = nn.Sequential(*upsampling)
        self.register_buffer("pixel_variance", torch.tensor(INITIAL_PIXEL_VARIANCE))

    @staticmethod
    def _upsample(in_channels, out_channels):
        return nn.ConvTranspose2d(
            in_channels, out_channels, 3, stride=2, padding=1, output_padding=1
        )

    def losses(self, images):
        """Per-image Gaussian NLL (batch variance) and KL (nats); updates `pixel_variance`."""
        features = torch.flatten(self.encoder_convolutions(images), 1)
        features = functional.relu(self.encoder_hidden(features))
        z_mean, z_log_var = self.z_mean(features), self.z_log_var(features)
        start = self.decoder_dense(reparameterize(z_mean, z_log_var))
        start = start.view(-1, CONV_VAE_STAGE_FILTERS[-1], CONV_VAE_START_SIZE, CONV_VAE_START_SIZE)
        reconstructions = self.decoder_convolutions(start)
        squared_error = torch.flatten((images - reconstructions).square(), 1)
        variance = squared_error.mean().detach().clamp_min(MIN_PIXEL_VARIANCE)
        num_pixels = squared_error.shape[1]
        reconstruction = 0.5 * squared_error.sum(dim=1) / variance + 0.5 * num_pixels * (
            math.log(2.0 * math.pi) + torch.log(variance)
        )
        with torch.no_grad():
            self.pixel_variance.mul_(PIXEL_VARIANCE_MOMENTUM).add_(
                (1.0 - PIXEL_VARIANCE_MOMENTUM) * variance
            )
        return reconstruction, kl_divergence(z_mean, z_log_var)


def trainable_parameter_count(module):
    """Number of scalars in the parameters that get gradients."""
    return sum(parameter.numel() for parameter in module.parameters() if parameter.requires_grad)


def batch_norm_statistic_count(module):
    """Number of scalars in the BN running means and variances (Keras' moving statistics)."""
    return sum(
        buffer.numel()
        for name, buffer in module.named_buffers()
        if name.endswith(("running_mean", "running_var"))
    )
