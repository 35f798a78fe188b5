# Khoa's container image: `docker build -t khoa .`, then
#   docker run -d -p 127.0.0.1:9440:9440 -v khoa-data:/var/lib/khoa khoa
# Configuration comes from KHOA_* variables (README "Running the server"); the data directory
# (database, root key of the file seal backend, audit trail files) is the volume /var/lib/khoa.
# compose.yaml runs two nodes on PostgreSQL behind one port.
ARG PYTHON_VERSION=3.11

# -- build: the wheel, installed with the server's dependencies into /opt/khoa ------------------------
FROM python:${PYTHON_VERSION}-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY requirements/server.lock requirements/server.lock
COPY src src
# Exact versions: the `server` extra's pins, every transitive dependency from the lock file.
RUN pip wheel --no-deps --wheel-dir /dist . \
 && python -m venv /opt/khoa \
 && /opt/khoa/bin/pip install -c requirements/server.lock "$(ls /dist/khoa-*.whl)[server]" \
 && /opt/khoa/bin/pip uninstall --yes pip \
 && /opt/khoa/bin/khoa --help > /dev/null

# -- runtime: the virtual environment and nothing else, run as an unprivileged user ------------------
FROM python:${PYTHON_VERSION}-slim
RUN groupadd --system --gid 10001 khoa \
 && useradd --system --uid 10001 --gid khoa --home-dir /var/lib/khoa --shell /usr/sbin/nologin khoa \
 && install -d -o khoa -g khoa -m 0700 /var/lib/khoa
COPY --from=build /opt/khoa /opt/khoa
COPY packaging/docker/healthcheck.py /opt/khoa/healthcheck.py
ENV PATH=/opt/khoa/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    KHOA_HOST=0.0.0.0 \
    KHOA_PORT=9440 \
    KHOA_DATA_DIR=/var/lib/khoa
VOLUME ["/var/lib/khoa"]
WORKDIR /var/lib/khoa
USER 10001:10001
EXPOSE 9440
# /_khoa/ready: 503 while the database or the audit trail cannot be used.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "/opt/khoa/healthcheck.py"]
ENTRYPOINT ["khoa"]
CMD ["server"]
