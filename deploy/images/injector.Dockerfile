# sidekey-injector image: one static binary on an empty filesystem.
# No shell (probes are HTTPS, shutdown drains on SIGTERM) and no CA files (the
# injector needs no outbound TLS; its serving certificate is mounted).
# Build the binary first from the repository root (see README.md here):
#   RUSTFLAGS='-C target-feature=+crt-static' cargo build --release \
#     --target x86_64-unknown-linux-gnu -p sidekey-agent -p sidekey-injector
#   docker build -f deploy/images/injector.Dockerfile -t ghcr.io/sidekey/injector:0.1.0 .
FROM scratch
COPY target/x86_64-unknown-linux-gnu/release/sidekey-injector /sidekey-injector
USER 65532:65532
EXPOSE 8443
ENTRYPOINT ["/sidekey-injector"]
