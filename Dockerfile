# The worker image: `docker compose up` builds it; `--scale worker=N` runs N of them in one consumer group.
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
COPY pyproject.toml README.md ./
COPY core ./core
COPY sentiment ./sentiment
COPY stream ./stream
COPY model ./model
COPY schemas ./schemas
COPY training ./training
RUN pip install --no-cache-dir .
RUN useradd --create-home --uid 10001 scorer
USER scorer
# the compiled scorer's tables for the default model, built and checked against TensorFlow now, not at each start
RUN python -m model.compiled model/default/model.keras /home/scorer/.cache/sentiment
ENTRYPOINT ["sentiment"]
CMD ["worker"]
