# mqseal: Mosquitto 2.0.x (Debian bookworm) with the mqseal plugin and CLI.
#   docker build -t mqseal .
#   docker run --rm -p 127.0.0.1:1883:1883 -v mqseal-state:/var/lib/mqseal mqseal
# The build stage uses the same scripts as CI (scripts/setup, cargo build).

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN scripts/setup && cargo build --release -p mqseal-plugin -p mqseal-cli \
 && scripts/install /out target/release

FROM debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends mosquitto mosquitto-clients \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/ /
COPY scripts/docker-entrypoint /usr/local/bin/mqseal-entrypoint
RUN mkdir -p /var/lib/mqseal/audit && chown -R mosquitto: /var/lib/mqseal /etc/mqseal
USER mosquitto
VOLUME ["/etc/mqseal", "/var/lib/mqseal"]
EXPOSE 1883
# A real MQTT CONNECT/CONNACK with the listener: with plugin_opt_auth key an anonymous client is
# refused ("not authorised"), which still proves the broker and mqseal answer.
HEALTHCHECK --interval=30s --timeout=5s --start-period=5s \
  CMD out=$(mosquitto_pub -h 127.0.0.1 -p 1883 -i mqseal-healthcheck -t mqseal/health -n 2>&1) \
      || echo "$out" | grep -q "not authorised" || exit 1
ENTRYPOINT ["/usr/local/bin/mqseal-entrypoint"]
