# Two images from one file, both holding this project installed with the same Apache Beam SDK:
#
#   docker build -t REGISTRY/klio-assets:TAG .                           # code location (default)
#   docker build --target beam-worker -t REGISTRY/klio-beam-worker:TAG . # Dataflow workers
#
# The code-location image serves the Dagster code location (`dagster api grpc`) in the Helm
# chart's user deployment, and the K8sRunLauncher starts every run pod from it too. The
# beam-worker image is Beam's own SDK container with this project added, for
# KLIO_DATAFLOW_SDK_CONTAINER_IMAGE: Dataflow needs the SDK version of the launcher, so
# BEAM_VERSION must equal the apache-beam installed in the code-location image (a test checks).
ARG PYTHON_VERSION=3.11
ARG BEAM_VERSION=2.77.0

# the project's files, once for both images
FROM scratch AS source
COPY pyproject.toml requirements.lock model-requirements.txt README.md workspace.yaml /src/
COPY klio_assets/ /src/klio_assets/
COPY klio_core/ /src/klio_core/
COPY klio_cli/ /src/klio_cli/
COPY klio_dev/ /src/klio_dev/
COPY pipelines/ /src/pipelines/
COPY resources/ /src/resources/
COPY sensors/ /src/sensors/
COPY jobs/ /src/jobs/

FROM apache/beam_python${PYTHON_VERSION}_sdk:${BEAM_VERSION} AS beam-worker
# FFmpeg decodes the sources soundfile cannot (M4A/AAC, WebM, MP4 audio); Debian's current build.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ffmpeg \
    && rm -rf /var/lib/apt/lists/*
COPY --from=source /src /opt/klio
WORKDIR /opt/klio
RUN pip install --no-cache-dir --compile -c requirements.lock . \
    && pip install --no-cache-dir --compile --no-deps -r model-requirements.txt \
    && python -m pipelines.numba_cache \
    && python -c "import apache_beam, klio_assets.builtin.audio; assert apache_beam.__version__ == '${BEAM_VERSION}'"
# the entrypoint stays Beam's /opt/apache/beam/boot, which Dataflow starts

FROM python:${PYTHON_VERSION}-slim-bookworm AS code-location
ENV PYTHONUNBUFFERED=1 \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    NUMBA_CACHE_DIR=/opt/klio/numba-cache \
    MPLCONFIGDIR=/tmp/matplotlib
# FFmpeg decodes the sources soundfile cannot (M4A/AAC, WebM, MP4 audio); Debian's current build.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ffmpeg \
    && rm -rf /var/lib/apt/lists/*
COPY --from=source /src /opt/klio
WORKDIR /opt/klio
RUN pip install --no-cache-dir --compile -c requirements.lock . \
    && pip install --no-cache-dir --compile --no-deps -r model-requirements.txt \
    && python -m pipelines.numba_cache \
    && useradd --create-home --uid 10001 klio \
    && mkdir -p "$DAGSTER_HOME" \
    && chown -R klio "$DAGSTER_HOME" "$NUMBA_CACHE_DIR"
USER 10001
EXPOSE 3030
# The Helm chart passes its own arguments (dagsterApiGrpcArgs); this default serves the same module.
CMD ["dagster", "api", "grpc", "--host", "0.0.0.0", "--port", "3030", "--module-name", "klio_assets.definitions"]
