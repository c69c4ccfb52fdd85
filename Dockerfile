# v2x-controller daemon image. Mount the site config at /config/config.yaml and a volume at /data.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1

RUN useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin v2x \
    && mkdir -p /data /config \
    && chown v2x:v2x /data

WORKDIR /app
COPY pyproject.toml README.md ./
COPY controller ./controller
COPY sim ./sim
RUN pip install . && rm -rf /app/build

USER v2x
WORKDIR /data

# 9000: OCPP websocket server (chargers connect here); 8080: HTTP API and health endpoint.
EXPOSE 9000 8080

# The daemon answers GET /health on its HTTP API port when it is up and its loops are alive.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=4).status == 200 else 1)"

ENTRYPOINT ["v2x"]
CMD ["run", "--config", "/config/config.yaml"]
