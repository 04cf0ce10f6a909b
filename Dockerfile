# Multi-stage build: compile with cargo, run from a slim Debian image.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/rtspgate /usr/local/bin/rtspgate
# RTSP, HTTP (API, later viewer/WHEP/HLS), WebRTC ICE (UDP and TCP), RTP/RTCP to UDP readers.
EXPOSE 8554/tcp 8888/tcp 8189/udp 8189/tcp 8000-8001/udp
USER nobody
ENTRYPOINT ["/usr/local/bin/rtspgate"]
