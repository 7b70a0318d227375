# Vane in a container: `docker build -t vane:0.1.0 .` from the repository root.
#
# Stage 1 builds the release binary. gateway/build.rs fetches ONNX Runtime from PyPI's onnxruntime wheel (pinned
# version and sha256) with python3, so the builder needs python3 and network access to PyPI, as a developer machine.
# Stage 2 is a slim runtime: the binary, ONNX Runtime's shared library beside it, CA certificates (https remotes and
# artifacts), and nothing else. The library path is set with ORT_DYLIB_PATH; a relative path is resolved next to the
# executable.
FROM rust:1.95-bookworm AS build
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY gateway gateway
COPY reconciler reconciler
COPY monitor monitor
COPY tests tests
COPY benches benches
COPY models models
COPY configs configs
RUN cargo build --release --locked -p gateway --bin vane \
    && mkdir -p /out \
    && cp target/release/vane /out/ \
    && cp "$(find target/release/build -name 'libonnxruntime.so.*' -path '*onnxruntime-*' | head -n 1)" /out/

FROM debian:bookworm-slim
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/vane --create-home vane
COPY --from=build /out/ /opt/vane/
ENV ORT_DYLIB_PATH=/opt/vane/libonnxruntime.so.1.31.1 \
    VANE_LISTEN=0.0.0.0:8080 \
    VANE_GRPC_LISTEN=0.0.0.0:8081 \
    VANE_DATA_DIR=/var/lib/vane/data \
    VANE_LOG_FORMAT=json
USER vane
EXPOSE 8080 8081
ENTRYPOINT ["/opt/vane/vane"]
CMD ["serve", "--model-dir", "/models"]
