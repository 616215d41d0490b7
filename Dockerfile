# The minionflow app image (compose.yaml's `app` and `studio` services). Holds no
# secrets: API keys and passwords come from the environment at run time.
# The supervisor's code never runs in this container: the docker sandbox backend
# starts a fresh, hardened container for each execution (see compose.yaml).
ARG PYTHON=python:3.11-slim-bookworm
FROM ${PYTHON}
# a C++ toolchain for llama-cpp-python (the embedded model, the offline default);
# with a Docker Model Runner worker it is installed but unused
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY minionflow ./minionflow
COPY graphs ./graphs
COPY nodes ./nodes
COPY serving ./serving
COPY storage ./storage
COPY sandbox ./sandbox
COPY cli ./cli
COPY contracts ./contracts
COPY evaluation ./evaluation
COPY langgraph.json ./
# llama.cpp's text library only, as scripts/setup.sh builds it
COPY scripts/llama-text-only.cmake ./scripts/
ENV CMAKE_ARGS="-DLLAVA_BUILD=OFF -DCMAKE_PROJECT_llama.cpp_INCLUDE=/app/scripts/llama-text-only.cmake -DGGML_NATIVE=OFF"
RUN pip install --no-cache-dir '.[studio]'
ENV MINIONFLOW_HOME=/data
VOLUME /data
ENTRYPOINT ["minionflow"]
CMD ["--help"]
