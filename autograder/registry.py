"""The graded labs: which notebook, which probe module, which check module."""

import dataclasses
import pathlib
import re

PACKAGE_DIR = pathlib.Path(__file__).resolve().parent
CHECKS_DIR = PACKAGE_DIR / "checks"
PROBES_DIR = PACKAGE_DIR / "probes"
LAB_METADATA_KEY = "course_lab"
LAB_NAME_PATTERN = re.compile(r"(lab[0-9]+)")


@dataclasses.dataclass(frozen=True)
class Lab:
    """One graded assignment."""

    name: str
    title: str

    @property
    def notebook(self):
        return f"{self.name}.ipynb"

    @property
    def check_module(self):
        return CHECKS_DIR / f"test_{self.name}.py"

    @property
    def probe_module(self):
        return PROBES_DIR / f"{self.name}.py"


LABS = {
    lab.name: lab
    for lab in (
        Lab("lab1", "Batch normalization on CIFAR-10"),
        Lab("lab2", "Fine-tuning ResNet18 on augmented MNIST"),
        Lab("lab3", "Generating MNIST-like images with a VAE"),
        Lab("lab4", "Generating CIFAR-like images with a convolutional VAE"),
        Lab("lab5", "Beta-VAE: latent perturbation and disentanglement"),
    )
}


def get_lab(name):
    """Returns the `Lab` called `name`.

    Raises:
        ValueError: for an unknown lab name.
    """
    if name not in LABS:
        raise ValueError(f"Unknown lab. Expected one of {sorted(LABS)}. Received: lab={name!r}")
    return LABS[name]


def detect_lab(notebook_path, notebook=None):
    """Finds which lab a submitted notebook belongs to.

    The notebook's metadata (`course_lab`, written by the source notebooks) wins;
    otherwise the file name (`lab3.ipynb`, `lab3-alice.ipynb`).

    Returns:
        The lab name, or None when it cannot be told.
    """
    if notebook is not None:
        name = notebook.get("metadata", {}).get(LAB_METADATA_KEY)
        if isinstance(name, str) and name in LABS:
            return name
    match = LAB_NAME_PATTERN.search(pathlib.Path(notebook_path).name.lower())
    if match and match.group(1) in LABS:
        return match.group(1)
    return None
