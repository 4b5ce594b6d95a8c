# OPTIONAL: a small base image for Docker-executor runs.
#
# You do not need this image. A worker mounts the Runyard SDK read-only into every run
# container (/runyard/sdk, on PYTHONPATH), so any image with Python >= 3.9 runs a Runyard
# script unchanged: python:3.11-slim, a PyTorch or CUDA image with Python, your own.
# This one only adds what the hardened defaults assume of an image:
#   - a non-root user with uid/gid 1000 (the cluster's container.user default, 1000:1000)
#     and a home directory, for tools that insist on one (HOME is /tmp in a run anyway);
#   - /workspace (where the run's files are mounted) as the working directory.
#
#   docker build -f deploy/run-base.Dockerfile -t runyard-run-base:3.11 deploy
#   docker build -f deploy/run-base.Dockerfile --build-arg BASE_IMAGE=my-mirror/python:3.11-slim \
#       -t runyard-run-base:3.11 deploy
#
# Then name it as a cluster's default image (container = { image = "runyard-run-base:3.11" })
# or per run (Environment.docker.base_image). Build FROM it to add your libraries:
#   FROM runyard-run-base:3.11
#   USER root
#   RUN pip install --no-cache-dir numpy scikit-learn
#   USER 1000:1000
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN groupadd --gid 1000 run \
    && useradd --uid 1000 --gid 1000 --create-home --home-dir /home/run --shell /bin/sh run \
    && mkdir -p /workspace \
    && chown 1000:1000 /workspace
USER 1000:1000
WORKDIR /workspace
CMD ["python3"]
