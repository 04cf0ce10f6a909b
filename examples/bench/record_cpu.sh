#!/bin/bash
# Recording cost: CPU and memory of the rtspgate binary with 10 camera paths
# (one GStreamer encoder feeding 10 mounts of testkit/camera.py: H.264
# 640x360 25 fps, "snow" at 1 Mbit/s, a keyframe a second), recording off,
# then on (1-minute files, each 1 s fragment written and fdatasync'ed).
#
#   bash examples/bench/record_cpu.sh [BIN] [SECONDS]
#
# BIN defaults to target/release/rtspgate (cargo build --release first).
# Results: docs/BENCHMARKS.md, "Recording".
set -u
cd "$(dirname "$0")/../.."
BIN=${1:-target/release/rtspgate}
SECS=${2:-45}
WORK=$(mktemp -d /tmp/rtspgate-record-bench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
run() {
  DIR=$WORK/rec-$REC; rm -rf $DIR; mkdir -p $DIR
  CAMPORT=$((20000 + RANDOM % 5000))
  /usr/bin/python3 testkit/camera.py --address 127.0.0.1 --pattern snow --mounts 10 --port $CAMPORT --path /test \
    --video h264 --audio none --fps 25 --size 640x360 --bitrate 1000 --gop 25 > $WORK/cam.log 2>&1 &
  CAM=$!
  sleep 3
  CFG=$WORK/cfg-$REC.toml
  { echo "record = $REC"; echo "record_path = \"$DIR/%path/%Y-%m-%d_%H-%M-%S-%f\""; echo 'record_segment_duration = "1m"'
    for i in $(seq 0 9); do echo "[paths.cam$i]"; echo "source = \"rtsp://127.0.0.1:$CAMPORT/test$i\""; echo 'transport = "tcp"'; done; } > $CFG
  RUST_LOG=warn $BIN --config $CFG --listen 127.0.0.1 --rtsp-port $((CAMPORT+1)) --http-port $((CAMPORT+2)) --rtp-port 31000 --webrtc-port $((CAMPORT+3)) > $WORK/gw-$REC.log 2>&1 &
  GW=$!
  sleep 10   # all live, past the first keyframes
  TCK=$(getconf CLK_TCK)
  t0=$(awk '{print $14+$15}' /proc/$GW/stat); c0=$(awk '{print $14+$15}' /proc/$CAM/stat); s0=$(date +%s.%N)
  sleep $SECS
  t1=$(awk '{print $14+$15}' /proc/$GW/stat); c1=$(awk '{print $14+$15}' /proc/$CAM/stat); s1=$(date +%s.%N)
  RSS=$(awk '/VmRSS/{print $2}' /proc/$GW/status)
  echo "record=$REC: gateway $(echo "scale=3; ($t1-$t0)*100/$TCK/($s1-$s0)" | bc) % of a core, RSS ${RSS} KiB; camera $(echo "scale=3; ($c1-$c0)*100/$TCK/($s1-$s0)" | bc) %; files: $(find $DIR -name '*.mp4' | wc -l), $(du -sh $DIR | cut -f1)"
  curl -s http://127.0.0.1:$((CAMPORT+2))/api/v1/streams | python3 -c 'import sys,json; print([s["state"] for s in json.load(sys.stdin)["streams"]])'
  kill $GW; kill $CAM; wait 2>/dev/null
}
REC=false run
REC=true run
