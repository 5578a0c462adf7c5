# syntax=docker/dockerfile:1
# tokend's container image: build with cargo, run as a non-root user on a
# distroless base (no shell, no package manager).

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin tokend \
 && mkdir -p /out/var/lib/tokend \
 && cp target/release/tokend /out/tokend

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
COPY --from=build /out/tokend /usr/local/bin/tokend
# The data dir, owned by the nonroot user (65532); mount a volume here.
COPY --from=build --chown=65532:65532 /out/var/lib/tokend /var/lib/tokend
ENV TOKEND_DATA_DIR=/var/lib/tokend \
    TOKEND_LOG_FORMAT=json
USER 65532:65532
VOLUME ["/var/lib/tokend"]
# gRPC, the optional admin listener, the optional metrics listener.
EXPOSE 50051 50052 9090
ENTRYPOINT ["/usr/local/bin/tokend", "serve"]
