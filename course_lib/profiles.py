"""Run profiles: every number that differs between a CPU check and a real GPU run.

``COURSE_PROFILE=fast`` (the default) is what CI and CPU laptops run: subsets of the
data and few epochs, so that the whole course executes on 2 CPU cores in minutes.
``COURSE_PROFILE=full`` is what a student with a GPU runs: whole data sets, real epochs.
Notebooks and the grader read the profile only through `settings()`.
"""

import copy
import os

PROFILE_ENV_VAR = "COURSE_PROFILE"
DEFAULT_PROFILE = "fast"

# One block per notebook (and one for the grader). `None` means "the whole split".
PROFILES = {
    "fast": {
        # Lecture demo (lecture/lecture_demo.ipynb). Batch 64: 3 epochs on 6,000 digits
        # take both autoencoders off the "average digit" plateau (test MSE, 3 seeds:
        # latent 2: 0.053, latent 5: 0.034-0.035; with batch 128 the 5-D one reached only
        # 0.040-0.047). The beta-VAE preview trains two smaller models.
        "demo": {
            "train_examples": 6000,
            "test_examples": 1000,
            "epochs": 3,
            "batch_size": 64,
            "beta_train_examples": 3000,
            "beta_epochs": 2,
            "betas": [1.0, 4.0],
        },
        # Lab 1. Both CNNs train with SGD (momentum 0.9) at a learning rate that suits the
        # batch-normalized one and is high for the plain one (Ioffe & Szegedy: BN permits
        # higher learning rates). Measured on 2 shared CPU cores (issue 16), the notebook's
        # test accuracy on the exact test images, BN minus plain, in points: lr 0.02: +6.0
        # to +14.2 over seeds 0-4 and 42 (mean +9.8, BN 38.3%, plain 28.5%; see
        # autograder/calibration/lab1.json); lr 0.03: +13.6, +6.7; lr 0.05: the plain CNN
        # stayed at chance in 2 of 3 seeds and BN's test accuracy fell to 20% in one;
        # lr 0.1: plain at chance (2 seeds). Adam 0.01: BN 8-10 points *behind* (2 seeds);
        # Adam 0.003 (before): +1.8 +- 4.2 over 5 seeds.
        "lab1": {
            "train_examples": 5000,
            "test_examples": 1000,
            "epochs": 3,
            "batch_size": 64,
            "filters": [8, 16, 32],
            "learning_rate": 0.02,
            "sgd_momentum": 0.9,
        },
        # Lab 2. The backbone is the shipped CIFAR-10 ResNet18 (course_lib.resnet.CIFAR10_WEIGHTS)
        # up to its third stage. Measured (1 thread, 2,000 digits, 1 frozen + 3 fine-tuning
        # epochs at batch 32, test accuracy, seeds 0/1): 3 stages pretrained 95.0 / 94.0%
        # (validation after the frozen phase 54.5 / 46.5%), 3 stages random 92.3 / 90.5% (24.5 /
        # 16.0%), 40-47 s of training; all 4 stages pretrained 92.5 / 93.9%, random 91.9 / 92.8%,
        # about 105 s (the fourth stage's CIFAR-10 features do not help on digits). The accuracy
        # can drop by 5-8 points from one fine-tuning epoch to the next (through the grader, 7
        # seeds of 1 + 3 epochs: 86.3-96.6%), so the notebook's fit_phase keeps each phase's best
        # validation epoch, and fine-tuning runs 4 epochs (seed 0: 84.7% after the 4th epoch,
        # 95.0% with the best one kept). 2 + 5 epochs, a cosine-decayed or 3x lower fine-tuning
        # rate, 4,000 digits or re-estimated BN statistics did not do better; Adam 1e-3 (frozen
        # 0.01) diverged. Outside the grader, 2 threads, 1 frozen + 4 fine-tuning epochs, test
        # accuracy of seeds 0/1 (2026-12-04): 2,000 digits at 32 px, batch 32: 94.2 / 95.2% (55 s
        # of training); 4,000: 95.4 / 96.2%; 2,000 with 8 fine-tuning epochs: 95.9 / 97.4%;
        # 6,000 at batch 64: 96.9 / 96.9% (138 s); 8,000: 97.2 / 95.8% (178 s); 6,000 with 2
        # stages: 96.8 / 95.8%; 4,000 at 48 px: 97.0 / 96.8% (125 s); 6,000 at 48 px, batch 64:
        # 98.0 / 97.2% (189 s), kept (from random weights: 95.7 / 93.4%, frozen-phase validation
        # 11.8 / 23.0% against 33.2 / 41.5%). Fine-tuning at Adam 1e-3 diverged (3 of 4 runs at
        # 8.5-9.9%). With the raw weights, through the grader: 96.7-97.8% over 7 seeds (mean
        # 97.2%); batch 32, Adam 6e-3 in phase 1, or both, moved single seeds by -1.4 to +1.3
        # points on all 10,000 test digits (seeds 1/5) and were not kept. Averaging the
        # fine-tuning weights (1 thread, all 10,000 test digits, seeds 0-5, 2026-12-06): 97.5,
        # 97.4, 97.7, 97.8, 97.4, 97.5% against 97.6, 96.9, 97.2% (seeds 0-2) and 96.6%
        # (seed 5) raw, at the same training time (102-128 s); through the grader 97.9-98.7%.
        # A fixed momentum (no plain mean over the first steps): 97.0% for seed 1, and a tenth
        # of the digits stuck at 58-63% through the grader.
        # Through the grader: calibration/lab2.json.
        "lab2": {
            "train_examples": 6000,
            "test_examples": 1000,
            "image_size": 48,
            "frozen_epochs": 1,
            "finetune_epochs": 4,
            "batch_size": 64,
            "frozen_learning_rate": 0.003,
            "backbone_stages": 3,
            # Fine-tuning validates and keeps a moving average of its weights
            # (course_lib.schedule.WeightAverage; 0 would keep the raw weights).
            "finetune_weight_average": 0.99,
        },
        # Lab 3: a short run learns most with larger steps (seed 0, test negative ELBO after
        # 4 epochs: 168.9 nats at 1e-3, 165.0 at 2e-3, 163.4 at 3e-3); the full run uses 1e-3.
        "lab3": {"train_examples": 12000, "test_examples": 1000, "epochs": 4, "batch_size": 128,
                 "learning_rate": 3e-3},
        # Lab 4. Batch 32: four times the steps of batch 128 for about 15% more time on a CPU.
        # Measured (1 thread, 3 processes on 2 cores, load ~3, seeds 0/1/2, 1,000 prior samples in
        # the course's CIFAR-10 evaluator, 2026-12-07): Fréchet distance 410.7 / 425.5 / 415.7,
        # classifier score 1.61 / 1.43 / 1.58, test MSE 0.016-0.017, 60-64 s of training; batch
        # 128: 453.8 / 450.4 / 464.9, 1.25-1.31, 0.023-0.024, 54-75 s; batch 64 430.6 / 434.3;
        # batch 16 422.1 (seed 0). Not kept (seed 0, batch 128, FD against 453.8): decoder
        # filters 128/64/32 442.5 (twice the time), latent 16 429.7 (seeds 1/2: 430.4 / 453.8),
        # latent 64 460.4, Adam 2e-3 445.2, 20,000 images x 2 epochs 448.1, a stride-1 conv after
        # each upsampling 467.3, kernel 4 448.9, beta 0.5 445.2, beta 2 468.5. A Bernoulli
        # likelihood (a plain conv VAE, same architecture and budget): 477.1, score 1.22. On top
        # of batch 32 (seeds 0-3, load 1-2): latent 16 (mean FD 415.7 over 4 seeds), latent 8, a KL
        # warm-up, 8 epochs or 20,000 images (test MSE 11-15% lower, FD within the seed spread):
        # none kept (BENCHMARKS.md, lab4). What bounds the distance is blur, not the budget or the
        # latent distribution: the test images' own reconstructions score 408.0 (prior samples
        # 410.7), and real images blurred by 2 px 408.9 (BENCHMARKS.md, "what bounds the sample
        # distance"). Nor, at batch 32, is a wider decoder, residual blocks, a larger latent or a
        # smaller beta (BENCHMARKS.md, "the levers left"). Through the grader: calibration/lab4.json.
        "lab4": {"train_examples": 10000, "test_examples": 1000, "epochs": 4, "batch_size": 32},
        "lab5": {
            "num_images": 10000,
            "eval_images": 3000,
            "image_size": 16,
            "epochs": 60,
            "batch_size": 64,
            "learning_rate": 0.002,
            "betas": [1.0, 16.0],
        },
        "grading": {"num_samples": 1000, "notebook_timeout_s": 900},
    },
    "full": {
        "demo": {
            "train_examples": None,
            "test_examples": None,
            "epochs": 20,
            "batch_size": 128,
            "beta_train_examples": None,
            "beta_epochs": 10,
            "betas": [1.0, 4.0],
        },
        # Lab 1: SGD (momentum 0.9) at 0.1, the rate batch-normalized CNNs are usually trained at on
        # CIFAR-10, for 10 epochs of the whole training set. Measured on the 2-core CPU through the
        # grader (one thread per kernel, three kernels, load ~3, 2,806-2,927 s per notebook, seeds
        # 0/1/2, 2026-12-07): BN 78.5 / 67.4 / 64.7%, the plain CNN at chance (10.0 / 8.9 / 10.0%)
        # on the 1,000 exact test images: BN ahead by 68.5 / 58.5 / 54.7 points
        # (autograder/calibration/lab1.json). Before: 0.02 for 20 epochs, BN 81.3 / 80.9 / 80.3%,
        # plain 74.0 / 76.4 / 76.4% (+7.3 / +4.5 / +3.9, 2.1-2.3 h); 0.04 for 10 epochs, BN
        # 77.1 / 76.7 / 77.7%, plain 73.0 / 75.1 / 72.1% (+4.1 / +1.6 / +5.6): at batch 128 the
        # plain CNN trains well up to 0.04, so only a rate it cannot use separates the two.
        "lab1": {
            "train_examples": None,
            "test_examples": None,
            "epochs": 10,
            "batch_size": 128,
            "filters": [32, 64, 128],
            "learning_rate": 0.1,
            "sgd_momentum": 0.9,
        },
        "lab2": {
            "train_examples": None,
            "test_examples": None,
            "image_size": 64,
            "frozen_epochs": 2,
            "finetune_epochs": 4,
            "batch_size": 128,
            # Fine-tuning at 2e-4 (the notebook's tenth of this), 4 epochs, averaging its weights
            # over about one epoch (422 steps). Measured on the 2-core CPU through the grader
            # (2026-12-07, one thread per kernel, two kernels on 2 cores, 1,789-1,827 s per
            # notebook), seeds 0/1/2/3: 99.8 / 99.7 / 99.8 / 99.7% on the probe's 1,000 test
            # digits (autograder/calibration/lab2.json). Before: 1e-3 / 1e-4, 3 epochs, the raw
            # weights: 98.8 / 99.2 / 99.4% (seeds 0-2, 5,333-5,384 s with 3 + 1 kernels); the same
            # with the average 99.2 / 98.8% (seeds 0/1); 3e-3 / 3e-4 with the average and 5
            # epochs 99.9% for seed 0, but seed 1 collapsed to 9.6% (its kept backbone moved 0.003
            # against 0.047 in the runs kept here).
            "frozen_learning_rate": 0.002,
            # The same stages as fast: one shipped file serves both.
            "backbone_stages": 3,
            "finetune_weight_average": 0.998,
        },
        "lab3": {"train_examples": None, "test_examples": None, "epochs": 30, "batch_size": 128,
                 "learning_rate": 1e-3},
        # Lab 4: batch 32 or a wider decoder lands where batch 128 does (FD 400-407 against 401-414;
        # BENCHMARKS.md, "the levers left").
        "lab4": {"train_examples": None, "test_examples": None, "epochs": 40, "batch_size": 128},
        "lab5": {
            "num_images": 10000,
            "eval_images": 10000,
            "image_size": 16,
            "epochs": 60,
            "batch_size": 64,
            "learning_rate": 0.002,
            "betas": [1.0, 4.0, 8.0, 16.0],
        },
        "grading": {"num_samples": 5000, "notebook_timeout_s": 5400},
    },
}


def active_profile(profile=None):
    """Returns the profile name in force: the argument, else ``$COURSE_PROFILE``, else "fast".

    Raises:
        ValueError: if the name is not a known profile.
    """
    name = profile or os.environ.get(PROFILE_ENV_VAR) or DEFAULT_PROFILE
    if name not in PROFILES:
        raise ValueError(
            f"Unknown run profile. Expected one of {sorted(PROFILES)} "
            f"(set {PROFILE_ENV_VAR}). Received: profile={name!r}"
        )
    return name


def settings(section, profile=None):
    """Returns a copy of the numbers of one notebook (or of the grader) in a profile.

    Args:
        section: "demo", "lab1" ... "lab5" or "grading".
        profile: "fast" or "full"; defaults to `active_profile()`.

    Raises:
        ValueError: on an unknown section or profile.
    """
    name = active_profile(profile)
    blocks = PROFILES[name]
    if section not in blocks:
        raise ValueError(
            f"Unknown profile section. Expected one of {sorted(blocks)}. "
            f"Received: section={section!r}"
        )
    return copy.deepcopy(blocks[section])
