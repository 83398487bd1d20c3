# syntax=docker/dockerfile:1
# SS-ACL chest X-ray report service (FastAPI + ONNX Runtime). No torch in any image.
#
#   docker build --target cpu -t ssacl-cxr:cpu .   # python:3.11-slim, onnxruntime (CPU)
#   docker build --target gpu -t ssacl-cxr:gpu .   # CUDA 13 + cuDNN 9 runtime, onnxruntime-gpu
#
# The model is read from /app/weights (ONNX files, manifest.json, tokenizer files), copied from
# weights/ at build time; mount another folder at the same path to serve other weights.
# Settings come from CXR_* environment variables (see .env.example and docs/OPERATIONS.md).
# Both images start with `python -m service` (service/__main__.py), like a local run: uvicorn's
# own access log (which would log query strings) and its `server` header are off there.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# onnxruntime-gpu 1.31.1 on PyPI is built for CUDA 13 and cuDNN 9: its wheel metadata requires
# nvidia-cuda-runtime~=13.0 and nvidia-cudnn-cu13~=9.0 for the [cuda,cudnn] extras. Change the
# two together; the host needs an NVIDIA driver that supports CUDA 13.
ARG CUDA_IMAGE=nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04
ARG ORT_GPU_VERSION=1.31.1

# ---- wheel: the project itself as a pure-Python wheel (no dependencies) ----
FROM ${PYTHON_IMAGE} AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service ./service
COPY model_export ./model_export
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# ---- builder-cpu: a venv with the `serve` extra only ----
FROM ${PYTHON_IMAGE} AS builder-cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=wheel /wheels /wheels
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --find-links /wheels "ssacl-cxr[serve]==0.1.0"

# ---- builder-gpu: the same venv on the CUDA base with the `serve-gpu` extra (onnxruntime-gpu) ----
FROM ${CUDA_IMAGE} AS builder-gpu
ARG ORT_GPU_VERSION
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
COPY --from=wheel /wheels /wheels
# `serve-gpu` = the serving dependencies with onnxruntime-gpu and never the CPU onnxruntime (both
# wheels provide the same `onnxruntime` module), so nothing is swapped by hand.
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --find-links /wheels \
       "ssacl-cxr[serve-gpu]==0.1.0" "onnxruntime-gpu==${ORT_GPU_VERSION}"

# ---- gpu: CUDA runtime image ----
FROM ${CUDA_IMAGE} AS gpu
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 cxr \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin cxr
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    CXR_WEIGHTS_DIR=/app/weights CXR_PROVIDER=cuda
WORKDIR /app
COPY --from=builder-gpu /opt/venv /opt/venv
COPY weights/ /app/weights/
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8000/readyz', timeout=4)"]
CMD ["python", "-m", "service", "--host", "0.0.0.0", "--port", "8000"]

# ---- cpu: slim CPU image (the default target, last in this file) ----
FROM ${PYTHON_IMAGE} AS cpu
RUN groupadd --system --gid 10001 cxr \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin cxr
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    CXR_WEIGHTS_DIR=/app/weights CXR_PROVIDER=cpu
WORKDIR /app
COPY --from=builder-cpu /opt/venv /opt/venv
COPY weights/ /app/weights/
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8000/readyz', timeout=4)"]
CMD ["python", "-m", "service", "--host", "0.0.0.0", "--port", "8000"]
