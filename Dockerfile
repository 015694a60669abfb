# protoviz on a GPU machine:
#   docker build -t protoviz .
#   docker run --gpus all --rm -v "$PWD":/protoviz protoviz            # dvc repro
# The image holds the pinned environment; the repository (code, params, .git, DVC
# cache) is mounted at /protoviz at run time. The torch wheel bundles its CUDA
# libraries; the NVIDIA container runtime (--gpus all) provides the driver.
FROM python:3.11.11-slim-bookworm

# git: DVC needs the repository's history.
RUN apt-get update \
    && apt-get install -y --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /protoviz
COPY pyproject.toml README.md ./
COPY protoviz_core ./protoviz_core
COPY stages ./stages
RUN pip install --no-cache-dir -e . \
    && git config --system --add safe.directory /protoviz

CMD ["dvc", "repro"]
