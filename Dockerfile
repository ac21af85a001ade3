# syntax=docker/dockerfile:1
#
# CPU image of trainer: a cgo build on Debian bookworm, run on bookworm-slim
# with OpenBLAS (dlopened at start-up as libopenblas.so.0; without it GEMM
# falls back to pure Go, several times slower).
#
#   docker build -t difftrain/trainer:latest .
#
# The GPU image is Dockerfile.gpu. Both run as the unprivileged user 65532.

ARG GO_VERSION=1.26

FROM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=1 go build -trimpath -ldflags="-s -w" -o /out/trainer ./cmd/trainer

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends libopenblas0 ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && ldconfig -p | grep -q 'libopenblas\.so\.0 '
COPY --from=build /out/trainer /usr/local/bin/trainer
USER 65532:65532
# gossip (TCP and UDP), gRPC, HTTP /metrics /healthz /readyz
EXPOSE 7946/tcp 7946/udp 7947/tcp 9090/tcp
ENTRYPOINT ["trainer"]
CMD ["--help"]
