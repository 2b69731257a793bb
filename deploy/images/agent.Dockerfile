# sidekey-agent image: one static binary on an empty filesystem.
# The injector runs it as an init container (`sidekey-agent install DIR`
# copies the binary into the pod's in-memory volume; `init` and `sidecar`
# write files). No shell and no CA files: the binary is statically linked
# (+crt-static) and bundles its TLS roots.
# Build the binary first from the repository root (see README.md here):
#   scripts/build-agent-static
#   docker build -f deploy/images/agent.Dockerfile -t ghcr.io/sidekey/agent:0.1.0 .
FROM scratch
COPY target/x86_64-unknown-linux-gnu/release-agent/sidekey-agent /sidekey-agent
USER 65532:65532
ENTRYPOINT ["/sidekey-agent"]
