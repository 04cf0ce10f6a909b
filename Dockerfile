# Multi-stage build: compile with cargo, run from a slim Debian image.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY web ./web
COPY static ./static
RUN cargo build --release --locked

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/rtspgate /usr/local/bin/rtspgate
# RTSP, HTTP (viewer page, WHEP, LL-HLS, API, metrics), WebRTC ICE (UDP and TCP),
# RTP/RTCP to UDP RTSP readers. With no arguments it serves the built-in demo.
EXPOSE 8554/tcp 8888/tcp 8189/udp 8189/tcp 8000-8001/udp
USER nobody
ENTRYPOINT ["/usr/local/bin/rtspgate"]
