# protoviz on a GPU machine:
#   docker build -t protoviz .
#   docker run --gpus all --rm --user "$(id -u):$(id -g)" -v "$PWD":/protoviz protoviz   # dvc repro
# The image holds the pinned environment; the repository (code, params, .git, DVC
# cache) is mounted at /protoviz at run time. The torch wheel bundles its CUDA
# libraries; the NVIDIA container runtime (--gpus all) provides the driver.
#
# The base is pinned by digest (a tag can be re-pushed; a digest cannot). To move to a
# newer build, read the tag's current digest with
#   docker buildx imagetools inspect python:3.11.11-slim-bookworm
# and replace both the tag and the digest below.
FROM python:3.11.11-slim-bookworm@sha256:081075da77b2b55c23c088251026fb69a7b2bf92471e491ff5fd75c192fd38e5

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

# Runs as an unprivileged user. Files written into the mounted repository belong to the
# user the container runs as: pass --user "$(id -u):$(id -g)" to make them yours. HOME is
# writable for any uid, for the torch hub cache, MLflow and git.
RUN useradd --create-home --uid 1000 --shell /usr/sbin/nologin protoviz \
    && chmod 1777 /home/protoviz
ENV HOME=/home/protoviz
USER 1000:1000

CMD ["dvc", "repro"]
