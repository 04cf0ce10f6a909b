#!/usr/bin/python3
"""Benchmark camera for examples/bench: ONE H.264 encoder, served by ONE
GstRtspServer process on any number of mounts (/test0 .. /test<M-1>).

The encoder (videotestsrc -> x264enc -> h264parse, SPS/PPS before every
keyframe) runs once; each mount is a cheap shared pipeline
``appsrc ! h264parse ! rtph264pay`` fed with the encoder's access units, so
100 mounts cost 100 payloaders, not 100 encoders. ``--pattern snow``
(default) is noise, which fills the target bitrate like a real camera; a
ball pattern compresses to ~100 kbit/s whatever the target.

Prints ``READY rtsp://ADDRESS:PORT/test`` (append the mount number) once
listening; runs until SIGTERM/SIGINT. Debian's /usr/bin/python3 with
python3-gi and gir1.2-gst-rtsp-server-1.0.
"""

import argparse
import signal
import sys
import threading

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main(argv):
    p = argparse.ArgumentParser(description="benchmark RTSP camera")
    p.add_argument("--address", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--mounts", type=int, default=1)
    p.add_argument("--size", default="960x540")
    p.add_argument("--fps", type=int, default=25)
    p.add_argument("--bitrate", type=int, default=2000, help="kbit/s")
    p.add_argument("--gop", type=int, default=25)
    p.add_argument("--pattern", default="snow", help="videotestsrc pattern (snow, ball, ...)")
    a = p.parse_args(argv)
    w, h = a.size.lower().split("x")

    Gst.init(None)
    caps = "video/x-h264,stream-format=byte-stream,alignment=au"
    encoder = Gst.parse_launch(
        f"videotestsrc is-live=true pattern={a.pattern} "
        f"! video/x-raw,format=I420,width={w},height={h},framerate={a.fps}/1 "
        f"! x264enc tune=zerolatency speed-preset=ultrafast bitrate={a.bitrate} "
        f"vbv-buf-capacity=1000 key-int-max={a.gop} "
        f"! h264parse config-interval=-1 ! {caps} "
        "! appsink name=sink emit-signals=true sync=false max-buffers=25 drop=true"
    )
    sink = encoder.get_by_name("sink")
    sources = set()
    lock = threading.Lock()

    def on_sample(appsink):
        sample = appsink.emit("pull-sample")
        if sample is None:
            return Gst.FlowReturn.OK
        buf = sample.get_buffer()
        with lock:
            targets = list(sources)
        for src in targets:
            # A shallow copy (shared memory) without the encoder's timestamps
            # (x264 starts at 1000 h): appsrc's do-timestamp stamps each with
            # its own pipeline's running time.
            out = buf.copy()
            out.pts = out.dts = Gst.CLOCK_TIME_NONE
            src.emit("push-buffer", out)
        return Gst.FlowReturn.OK

    sink.connect("new-sample", on_sample)

    def on_configure(_factory, media):
        src = media.get_element().get_by_name("src")
        with lock:
            sources.add(src)

        def gone(_media):
            with lock:
                sources.discard(src)

        media.connect("unprepared", gone)

    server = GstRtspServer.RTSPServer()
    # DESCRIBE waits for the mount's pipeline to prepare; with the default
    # single thread, 100 cameras connecting at once would queue for minutes.
    server.get_thread_pool().set_max_threads(max(16, a.mounts + 8))
    server.set_address(a.address)
    server.set_service(str(a.port))
    mounts = server.get_mount_points()
    launch = (
        f"( appsrc name=src is-live=true format=time do-timestamp=true caps={caps} "
        "! h264parse ! rtph264pay pt=96 name=pay0 )"
    )
    for i in range(a.mounts):
        f = GstRtspServer.RTSPMediaFactory()
        f.set_launch(launch)
        f.set_shared(True)
        f.connect("media-configure", on_configure)
        mounts.add_factory(f"/test{i}", f)

    loop = GLib.MainLoop()
    if server.attach(None) == 0:
        print(f"camera.py: cannot listen on {a.address}:{a.port}", file=sys.stderr, flush=True)
        return 2
    encoder.set_state(Gst.State.PLAYING)

    def stop(*_):
        loop.quit()
        return GLib.SOURCE_REMOVE

    GLib.unix_signal_add(GLib.PRIORITY_HIGH, signal.SIGTERM, stop)
    GLib.unix_signal_add(GLib.PRIORITY_HIGH, signal.SIGINT, stop)
    print(f"READY rtsp://{a.address}:{server.get_bound_port()}/test", flush=True)
    loop.run()
    encoder.set_state(Gst.State.NULL)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
