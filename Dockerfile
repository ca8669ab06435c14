# Attention Atlas: the HTTP service with a CPU build of PyTorch.
#
#   docker build -t attention-atlas .
#   docker run -p 127.0.0.1:8000:8000 -v atlas-data:/var/lib/attention-atlas attention-atlas
#
# See docs/docker.md for the build arguments, volumes and environment variables.

ARG BASE_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------------------------------
# builder: a virtual environment holding the dependencies declared in pyproject.toml. The C++ test
# programs, headers and tools shipped inside the torch wheel are dropped: they serve compiling
# extensions, which the runtime image (no compiler) cannot do anyway.
# ---------------------------------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS builder

# The CPU build of torch, pinned: an unpinned torch from PyPI is the multi-GB CUDA build. A wheel placed
# in build/wheels/ is used first; otherwise TORCH_INDEX_URL is asked (set it empty to use only the
# wheels in the build context and PyPI).
ARG TORCH_SPEC=torch==2.13.0+cpu
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# Optional dependency groups of pyproject.toml to install as well (comma-separated).
ARG EXTRAS=postgres

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DEFAULT_TIMEOUT=120 \
    PATH=/opt/venv/bin:$PATH

RUN python3 -m venv /opt/venv

# Optional inputs from the build context, each copied with a file that always exists (alembic.ini) so
# that an absent folder matches nothing instead of failing the COPY:
#   build/wheels/*.whl           wheels installed from there first (e.g. the CPU torch wheel)
#   build/ca-certificates/*.crt  extra CA certificates pip trusts (e.g. a TLS-inspecting proxy's);
#                                used in this stage only, never copied to the final image
COPY alembic.ini build/wheel[s] /wheels/
COPY alembic.ini build/ca-certificate[s] /extra-ca/
RUN cp /etc/ssl/certs/ca-certificates.crt /tmp/build-ca.pem \
    && for f in /extra-ca/*.crt; do if [ -f "$f" ]; then cat "$f" >> /tmp/build-ca.pem; fi; done
ENV PIP_CERT=/tmp/build-ca.pem

RUN set -eu; \
    if [ -n "$TORCH_INDEX_URL" ]; then extra="--extra-index-url $TORCH_INDEX_URL"; else extra=""; fi; \
    pip install --find-links /wheels $extra "$TORCH_SPEC"

# the dependencies of pyproject.toml (and of the EXTRAS groups), with torch held at the version above
COPY pyproject.toml /src/
RUN set -eu; \
    EXTRAS="$EXTRAS" python -c "import os, tomllib; \
p = tomllib.load(open('/src/pyproject.toml', 'rb'))['project']; \
groups = [g.strip() for g in os.environ['EXTRAS'].split(',') if g.strip()]; \
reqs = p['dependencies'] + [r for g in groups for r in p['optional-dependencies'][g]]; \
open('/src/requirements.txt', 'w').write('\n'.join(reqs) + '\n')"; \
    echo "$TORCH_SPEC" > /src/constraints.txt; \
    pip install --find-links /wheels -c /src/constraints.txt -r /src/requirements.txt; \
    torch_dir=$(python -c "import os, torch; print(os.path.dirname(torch.__file__))"); \
    rm -rf "$torch_dir/test" "$torch_dir/include"; \
    if [ -d "$torch_dir/bin" ]; then \
        find "$torch_dir/bin" -mindepth 1 -maxdepth 1 ! -name torch_shm_manager -exec rm -rf {} +; \
    fi; \
    printf '#!/bin/sh\nexec python -m service.cli "$@"\n' > /opt/venv/bin/attention-atlas; \
    chmod 0755 /opt/venv/bin/attention-atlas; \
    python -c "import torch; assert not torch.version.cuda, 'a CUDA build of torch'; print(torch.ones(2) @ torch.ones(2))"

# ---------------------------------------------------------------------------------------------------
# runtime: the virtual environment, the code, the knowledge files; no compilers, runs unprivileged
# ---------------------------------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS runtime

ARG ATLAS_UID=10001

RUN useradd --system --uid "$ATLAS_UID" --user-group --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin atlas \
    && mkdir -p /var/lib/attention-atlas \
    && chown "$ATLAS_UID:$ATLAS_UID" /var/lib/attention-atlas

COPY --from=builder /opt/venv /opt/venv

# service/, data/ and migrations/ stay side by side under /app: the service finds the knowledge files
# and the migrations next to its package.
WORKDIR /app
COPY alembic.ini ./
COPY migrations/ migrations/
COPY data/ data/
COPY service/ service/
RUN /opt/venv/bin/python -m compileall -q service migrations

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ATLAS_HOST=0.0.0.0 \
    ATLAS_PORT=8000 \
    ATLAS_VAR_DIR=/var/lib/attention-atlas

VOLUME ["/var/lib/attention-atlas"]
EXPOSE 8000
USER ${ATLAS_UID}:${ATLAS_UID}

# Liveness through the service's own /healthz, with the interpreter already in the image (no curl).
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 CMD ["python", "-c", "import os, urllib.request as u; h = os.environ.get('ATLAS_HOST') or '0.0.0.0'; h = '127.0.0.1' if h in ('0.0.0.0', '::') else h; h = '[' + h + ']' if ':' in h else h; u.urlopen('http://%s:%s/healthz' % (h, os.environ.get('ATLAS_PORT') or '8000'), timeout=4)"]

ENTRYPOINT ["attention-atlas"]
CMD ["serve"]
