# mqseal: Eclipse Mosquitto 2.0.11 (Debian 12) with the mqseal plugin and CLI.
#   docker build -t mqseal .                     (podman: add --format docker, or HEALTHCHECK is dropped)
# How to run it, and why the realm (the authority's private key) never goes into it: README.md,
# "Docker". scripts/docker-check builds it and checks all of that.
#
# Base images pinned by tag: the Rust release CI builds with, and the Debian 12 point release;
# both stages are Debian 12, so the bindings come from the headers of the broker that loads the
# plugin (mosquitto-dev 2.0.11).

FROM docker.io/library/rust:1.95.0-bookworm AS build
WORKDIR /src
# Build packages first, as CI installs them: a source change reuses this layer.
COPY scripts/setup scripts/setup
RUN scripts/setup --build
# The sources (what .dockerignore lets in: never target/, run/ or .git).
COPY . .
# The image ships no debug info (the release profile keeps some for profiling on the host).
# Cache mounts keep the crates and the compiled dependencies for the next build.
ENV CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_PROFILE_RELEASE_STRIP=debuginfo
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p mqseal-plugin -p mqseal-cli \
 && scripts/install /out target/release

FROM docker.io/library/debian:12.15-slim
# The broker's user and group are 1883:1883, as in the official eclipse-mosquitto image, so a
# host directory can be given to it (chown 1883:1883 DIR). Made before the package, whose
# postinst keeps an existing mosquitto user.
RUN groupadd --system --gid 1883 mosquitto \
 && useradd --system --uid 1883 --gid mosquitto --home-dir /var/lib/mosquitto --no-create-home \
      --shell /usr/sbin/nologin mosquitto \
 && apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends mosquitto mosquitto-clients \
 && apt-get clean && rm -rf /var/lib/apt/lists/*
# Everything here belongs to root: the broker (uid 1883) can change neither its configuration
# nor its code. It writes only /var/lib/mqseal; it reads what it trusts from /etc/mqseal/trust.
COPY --from=build /out/ /
COPY scripts/docker-entrypoint /usr/local/bin/mqseal-entrypoint
COPY scripts/docker-healthcheck /usr/local/bin/mqseal-healthcheck
COPY examples/paper-scenario/run /usr/share/mqseal/paper-scenario/run
RUN install -d -o mosquitto -g mosquitto -m 0750 /var/lib/mqseal \
 && install -d -m 0755 /etc/mqseal/trust
USER mosquitto:mosquitto
EXPOSE 1883
# No MQTT connection: any would write an auth.refused record into the audit log and broker log
# lines. The probe checks that the broker holds its listener and that its event loop turns.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 CMD ["/usr/local/bin/mqseal-healthcheck"]
ENTRYPOINT ["/usr/local/bin/mqseal-entrypoint"]
