"""Lab 3's test likelihood at the fast/full budget: negative ELBO and an importance-sampled NLL.

The model is lab 3's dense VAE as a `course_lib.vae.VAE` (`keras_models.build_lab3_vae`),
trained with the lab's profile settings; the test images are the first `test_examples`.
"""

import time

IMPORTANCE_SAMPLES = 100


def lab3_likelihood(seed, profile=None, importance_samples=IMPORTANCE_SAMPLES):
    """Trains lab 3's VAE once and measures its test likelihood.

    Args:
        seed: seed of the weights and data order.
        profile: "fast" or "full" (default: the active profile).
        importance_samples: codes per image of the importance-sampled NLL.

    Returns:
        A dict: seed, budget, train seconds, negative ELBO and importance-sampled NLL
        (nats per image and bits per dimension).
    """
    import course_lib
    from course_lib import data
    from course_lib import vae as vae_lib

    from benchmarks import keras_models

    settings = course_lib.settings("lab3", profile)
    train_images, _ = data.load_mnist("train", limit=settings["train_examples"])
    test_images, _ = data.load_mnist("test", limit=settings["test_examples"])
    course_lib.set_seed(seed)
    model = keras_models.build_lab3_vae()
    started = time.perf_counter()
    model.fit(train_images, epochs=settings["epochs"], batch_size=settings["batch_size"], verbose=0)
    train_seconds = time.perf_counter() - started
    elbo = vae_lib.evaluate_elbo(model, test_images)
    nll = vae_lib.importance_sampled_nll(model, test_images, importance_samples, seed=seed)
    return {
        "seed": seed,
        "budget": f"{len(train_images)} images x {settings['epochs']} epochs, batch {settings['batch_size']}",
        "train_seconds": round(train_seconds, 1),
        "negative_elbo_nats": round(elbo["elbo_nats_per_image"], 2),
        "negative_elbo_bits_per_dim": round(elbo["bits_per_dim"], 4),
        "nll_nats": round(nll["nll_nats_per_image"], 2),
        "nll_bits_per_dim": round(nll["bits_per_dim"], 4),
        "importance_samples": importance_samples,
        "test_images": len(test_images),
    }


def format_likelihood_table(rows):
    """Markdown table of `lab3_likelihood` results."""
    lines = [
        "| seed | budget | train s | -ELBO nats/image | -ELBO bits/dim | IS NLL nats/image (K) | IS NLL bits/dim |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['seed']} | {row['budget']} | {row['train_seconds']} | {row['negative_elbo_nats']} "
            f"| {row['negative_elbo_bits_per_dim']} | {row['nll_nats']} ({row['importance_samples']}) "
            f"| {row['nll_bits_per_dim']} |"
        )
    return "\n".join(lines)
