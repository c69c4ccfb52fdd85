# v2x-controller daemon image. Mount the site config at /config/config.yaml and a volume at /data
# (the working directory: a relative storage.path such as the default v2x.sqlite lands there).
# An exact tag: the same Python and Debian on every build (bump it on purpose, e.g. for a security fix).
FROM python:3.11.14-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

RUN useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin v2x \
    && mkdir -p /data /config \
    && chown v2x:v2x /data

# The daemon's runtime dependencies only, at the versions of constraints.txt: no simulator plots or
# Dask sweeps (the `sim` extra), and cvxpy without its default solvers (the planner solves with
# HiGHS). Then what the daemon never loads: the packages' own test suites.
WORKDIR /app
COPY pyproject.toml README.md constraints.txt ./
COPY controller ./controller
COPY sim ./sim
RUN pip install --constraint constraints.txt . \
    && site="$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
    && find "$site" -depth -mindepth 2 -type d -name tests -exec rm -rf {} + \
    && rm -rf /app/build

USER v2x
WORKDIR /data

# 9000: OCPP websocket server (chargers connect here); 8080: HTTP API and health endpoint
# (reachable from outside the container only with api.host: 0.0.0.0 in the config).
EXPOSE 9000 8080

# The daemon answers GET /health on its HTTP API when it is up and its loops are alive; `v2x health`
# asks it at the api.host/api.port of the same config (exit 0 healthy, 1 not).
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["v2x", "health", "--config", "/config/config.yaml", "--timeout", "5"]

# The daemon's clean stop (safe profiles to every charger) takes under 5 s; Docker's default grace
# period is 10 s. Compose: stop_grace_period: 15s gives a slow disk some room.
STOPSIGNAL SIGTERM
ENTRYPOINT ["v2x"]
CMD ["run", "--config", "/config/config.yaml"]
