#!/usr/bin/env bash
# Prepares .whl/ (ignored by git): the wheels benchmarks/device_suite.sh installs on the lent GPU
# machine, which has Python 3.12 on x86-64 Linux and reaches no package index.
#
#   bash benchmarks/device_wheels.sh
#
# Carried: what the two benchmarks (train_step.py, sample_throughput.py) import that the lent
# machine lacks, at the versions installed here, and those packages' own requirements that it
# lacks too. The import path was traced by running both benchmarks and mapping sys.modules to
# distributions (2026-12-03): absl-py, etils, flax, humanize, jax, ml-collections, ml-dtypes,
# msgpack, numpy, opt-einsum, optax, orbax-checkpoint, pillow, protobuf, pyyaml, rich,
# simplejson, tensorstore, typing-extensions, uvloop and a few of their helpers; of these the
# machine lacks ml-collections alone (docs of the device tool, KINDS.md). No TensorFlow, grain,
# clu, tensorboardX or matplotlib is imported on that path.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
packages=(ml-collections)
# The lent machine's Python packages (KINDS.md, "Python packages already there"), to check
# that every requirement of a carried wheel is either there or carried as well.
device_has="absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio
attrs botorch build certifi charset-normalizer chex click cloudpickle cmake colorama contourpy
coverage cuda-bindings cuda-core cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax
e3nn einops equinox etils execnet filelock flatbuffers flax fonttools formulaic frozenlist fsspec
gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize hypothesis idna imageio
iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib
kiwisolver lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown
markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict
multipledispatch mypy-extensions nanobind narwhals networkx ninja numba numba-cuda numpy numpyro
nvidia-ml-py onnx onnx-ir onnxruntime onnxscript opencv-python-headless optax opt-einsum
opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy
portalocker prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments
pyparsing pyproject-hooks pyre-extensions pytest python-dateutil pytorch-lightning pyyaml regex
requests rich safetensors scikit-build-core scikit-image scikit-learn scipy seaborn sentencepiece
sentence-transformers setuptools shellingham simplejson six sortedcontainers statsmodels sympy
tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm
tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm
transformers treescope triton typer typing-extensions typing-inspect urllib3 uvloop
wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp"

mkdir -p .whl
rm -f .whl/*.whl # One version of each: two stop the install there.
for package in "${packages[@]}"; do
  version=$("$python" -m pip show "$package" 2>/dev/null | sed -n 's/^Version: //p')
  [[ -n $version ]] || {
    echo "$package is not installed here: pip install -e . first" >&2
    exit 1
  }
  "$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 -d .whl "$package==$version"
done

# Each wheel's own requirements (extras aside) must be on the machine or in .whl/.
"$python" - "$device_has" .whl/*.whl <<'EOF'
import re
import sys
import zipfile


def normal(name):
    return re.sub(r"[-_.]+", "-", name).lower()


there = set(sys.argv[1].split())
wheels = sys.argv[2:]
carried = {normal(w.rsplit("/", 1)[-1].split("-")[0]) for w in wheels}
missing = []
for wheel in wheels:
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        requires = [
            line.split(":", 1)[1].strip()
            for line in z.read(meta).decode().splitlines()
            if line.startswith("Requires-Dist:")
        ]
    needed = [r for r in requires if "extra ==" not in r]
    names = [normal(re.split(r"[\s;<>=!~\[(]", r, maxsplit=1)[0]) for r in needed]
    print(f"{wheel}: requires {', '.join(names) or 'nothing'}")
    missing += [f"{n} (for {wheel})" for n in names if n not in there | carried]
if missing:
    sys.exit("not on the lent machine, add to `packages`: " + "; ".join(missing))
EOF
du -sh .whl
size=$(du -sm .whl | cut -f1)
((size <= 60)) || {
  echo ".whl is ${size} MB: over the 60 MB that leave room for the tree (64 MiB a call)" >&2
  exit 1
}
