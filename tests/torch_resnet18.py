"""A plain-PyTorch ResNet18 whose module names (state-dict keys) equal torchvision's.

torchvision is not installed here; this reference lets the tests check that
`course_lib.resnet.load_torch_state_dict` maps torchvision's keys and layouts
correctly: same weights, same input -> same output. The architecture follows
torchvision's `resnet18` (BasicBlock, expansion 1, no bias in convolutions,
`downsample = Sequential(1x1 conv, BN)` where the shape changes).
"""

import torch
from torch import nn

STAGE_FILTERS = (64, 128, 256, 512)
BLOCKS_PER_STAGE = 2
IMAGENET_CLASSES = 1000


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection."""

    def __init__(self, in_channels, out_channels, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, inputs):
        shortcut = inputs if self.downsample is None else self.downsample(inputs)
        outputs = self.relu(self.bn1(self.conv1(inputs)))
        outputs = self.bn2(self.conv2(outputs))
        return self.relu(outputs + shortcut)


class ResNet18(nn.Module):
    """torchvision-compatible ResNet18: input NCHW, output logits."""

    def __init__(self, num_classes=IMAGENET_CLASSES):
        super().__init__()
        self.conv1 = nn.Conv2d(3, STAGE_FILTERS[0], 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(STAGE_FILTERS[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_channels = STAGE_FILTERS[0]
        for stage, filters in enumerate(STAGE_FILTERS, start=1):
            first_stride = 1 if stage == 1 else 2
            blocks = [BasicBlock(in_channels, filters, first_stride)]
            blocks += [BasicBlock(filters, filters) for _ in range(BLOCKS_PER_STAGE - 1)]
            setattr(self, f"layer{stage}", nn.Sequential(*blocks))
            in_channels = filters
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(STAGE_FILTERS[-1], num_classes)

    def forward(self, inputs):
        x = self.maxpool(self.relu(self.bn1(self.conv1(inputs))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def randomize_batch_norm(model, generator):
    """Gives every BN layer random affine parameters and running statistics.

    With the defaults (gamma 1, beta 0, mean 0, var 1) a swapped or untransposed BN
    array would go unnoticed; random values make every array matter.
    """
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                size = module.num_features
                module.weight.copy_(0.5 + torch.rand(size, generator=generator))
                module.bias.copy_(0.1 * torch.randn(size, generator=generator))
                module.running_mean.copy_(0.1 * torch.randn(size, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(size, generator=generator))
                batches_seen = int(torch.randint(1, 1000, (1,), generator=generator))
                module.num_batches_tracked.fill_(batches_seen)
    return model
