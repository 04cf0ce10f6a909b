#!/usr/bin/python3
"""GStreamer peer for examples/bench.

Relay mode (default): GstRtspServer re-serving an RTSP camera, the way a
GStreamer user builds an RTSP proxy: one shared media factory
``rtspsrc location=URL latency=0 ! rtph264depay ! rtph264pay name=pay0``
on /relay. The camera is pulled when the first reader arrives; all readers
share that one pipeline. Prints ``READY rtsp://ADDRESS:PORT/relay``.

Ingest mode (--ingest M): what pulling M cameras costs GStreamer with no
reader: M pipelines ``rtspsrc location=URL<i> latency=0 ! rtph264depay !
fakesink`` in this one process (receive and depacketize, as rtspgate's
ingest does). Prints ``READY <pipelines that depayloaded a frame>`` once
all have (or after 20 s).

Debian's /usr/bin/python3 with python3-gi and gir1.2-gst-rtsp-server-1.0.
"""

import argparse
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main(argv):
    p = argparse.ArgumentParser(description="GStreamer RTSP relay / ingest peer")
    p.add_argument("--source", required=True,
                   help="camera URL (relay) or URL prefix to which 0..M-1 is appended (ingest)")
    p.add_argument("--address", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--ingest", type=int, default=0, metavar="M")
    a = p.parse_args(argv)
    Gst.init(None)
    loop = GLib.MainLoop()

    def stop(*_):
        loop.quit()
        return GLib.SOURCE_REMOVE

    GLib.unix_signal_add(GLib.PRIORITY_HIGH, signal.SIGTERM, stop)
    GLib.unix_signal_add(GLib.PRIORITY_HIGH, signal.SIGINT, stop)

    if a.ingest:
        pipelines = []
        for i in range(a.ingest):
            pl = Gst.parse_launch(
                f"rtspsrc location={a.source}{i} latency=0 ! rtph264depay "
                "! fakesink name=sink sync=false"
            )
            pl.set_state(Gst.State.PLAYING)
            pipelines.append(pl)
        started = GLib.get_monotonic_time()

        def live():
            n = 0
            for pl in pipelines:
                stats = pl.get_by_name("sink").get_property("stats")
                ok, rendered = stats.get_uint64("rendered")
                n += 1 if ok and rendered > 0 else 0
            return n

        def check():
            n = live()
            if n == len(pipelines) or GLib.get_monotonic_time() - started > 20_000_000:
                # How many pipelines have depayloaded at least one frame.
                print(f"READY {n}", flush=True)
                return GLib.SOURCE_REMOVE
            return GLib.SOURCE_CONTINUE

        GLib.timeout_add(200, check)
        loop.run()
        for pl in pipelines:
            pl.set_state(Gst.State.NULL)
        return 0

    server = GstRtspServer.RTSPServer()
    server.set_address(a.address)
    server.set_service(str(a.port))
    f = GstRtspServer.RTSPMediaFactory()
    f.set_launch(
        f"( rtspsrc location={a.source} latency=0 ! rtph264depay ! rtph264pay pt=96 name=pay0 )"
    )
    f.set_shared(True)
    server.get_mount_points().add_factory("/relay", f)
    if server.attach(None) == 0:
        print(f"relay.py: cannot listen on {a.address}:{a.port}", file=sys.stderr, flush=True)
        return 2
    print(f"READY rtsp://{a.address}:{server.get_bound_port()}/relay", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
