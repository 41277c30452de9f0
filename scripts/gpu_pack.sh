#!/usr/bin/env bash
# Packs what the prepared GPU run (scripts/gpu_run.sh) needs on a GPU machine that has
# Python 3.12 and a CUDA torch but no network: the grader's missing packages as wheels
# (.whl/, the versions of this project's .venv), and the data as it may travel there
# (build/gpu-data/: MNIST whole, a uint8 subset of CIFAR-10 that fits the 64 MiB a call
# may carry: the first CIFAR_TRAIN_IMAGES training images and the exact test images).
#
#   bash scripts/gpu_pack.sh   # then carry: .whl build/gpu-data/shared/mnist.npz build/gpu-data/cifar10.npz
#
# MNIST is not copied: build/gpu-data/shared links to the data folder, and the device tool
# carries a path through a link as the file it names.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
CIFAR_TRAIN_IMAGES="${CIFAR_TRAIN_IMAGES:-8000}"
# What the grader imports and the GPU machine's image lacks (it has torch, numpy, h5py,
# matplotlib, rich, absl-py, ml-dtypes, packaging, pygments, psutil, python-dateutil, attrs).
PACKAGES=(keras namex optree nbformat fastjsonschema jsonschema jsonschema-specifications referencing
  rpds-py jupyter_core platformdirs traitlets nbclient jupyter_client pyzmq tornado ipykernel comm
  debugpy ipython ipython_pygments_lexers jedi parso matplotlib-inline prompt_toolkit wcwidth pexpect
  ptyprocess stack-data asttokens executing pure_eval)
PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64)

grep -qxF "/.whl/" .git/info/exclude 2>/dev/null || echo "/.whl/" >> .git/info/exclude
rm -rf .whl && mkdir -p .whl
freeze="$(python -m pip freeze --disable-pip-version-check)"
for package in "${PACKAGES[@]}"; do
  pinned="$(echo "$freeze" | grep -i -E "^${package//[-_]/[-_]}==" || true)"
  if [ -z "$pinned" ]; then echo "gpu_pack: $package is not in .venv (run scripts/setup.sh)" >&2; exit 2; fi
  python -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp $(printf -- "--platform %s " "${PLATFORMS[@]}") -d .whl "$pinned"
done

mkdir -p build/gpu-data
ln -sfn "$COURSE_DATA_DIR" build/gpu-data/shared
ln -sfn shared/mnist.npz build/gpu-data/mnist.npz
python - "$COURSE_DATA_DIR/cifar10.npz" build/gpu-data/cifar10.npz "$CIFAR_TRAIN_IMAGES" <<'EOF'
import sys
import numpy as np

source, target, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
with np.load(source) as data:
    exact = data["test_is_lossless"]
    arrays = {
        "x_train": data["x_train"][:count], "y_train": data["y_train"][:count],
        "x_test": data["x_test"][exact], "y_test": data["y_test"][exact],
        "test_is_lossless": np.ones(int(exact.sum()), dtype=bool),
        "class_names": data["class_names"],
    }
np.savez_compressed(target, **arrays)
print(f"gpu_pack: {target}: {count} training images, {int(exact.sum())} exact test images")
EOF
du -shL .whl build/gpu-data/mnist.npz build/gpu-data/cifar10.npz | sed 's/^/gpu_pack: /'
total=$(( $(du -cbL .whl build/gpu-data/mnist.npz build/gpu-data/cifar10.npz | tail -1 | cut -f1) + $(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1) ))
echo "gpu_pack: $((total / 1048576)) MiB would travel (limit 64 MiB)"
[ "$total" -lt $((64 * 1048576)) ] || { echo "gpu_pack: too large: lower CIFAR_TRAIN_IMAGES" >&2; exit 1; }
