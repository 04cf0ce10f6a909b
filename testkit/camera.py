#!/usr/bin/python3
"""A scriptable RTSP "camera" for rtspgate's tests and benchmarks (the one
camera of testkit/, driven by testkit::camera and examples/).

Serves a live test stream (moving ball or noise + sine tone) over RTSP with
GstRtspServer, on 127.0.0.1 unless ``--address`` says otherwise. Prints
exactly one line ``READY rtsp://<address>:<port><path>`` on stdout once
listening, then one line ``CLIENT <ip>`` per RTSP connection accepted (so a
test can count how often the camera was read), and runs until SIGTERM/SIGINT.

Two modes:
  * one mount (default): the encoders run per media, shared by the mount's
    clients; video H.264/H.265 and/or audio AAC/PCMA/PCMU/Opus;
  * ``--mounts M``: the benchmark fan-out, ONE H.264 encoder feeding M mounts
    ``<path>0 .. <path>M-1`` (``appsrc ! h264parse ! rtph264pay`` each), so
    100 mounts cost 100 payloaders, not 100 encoders. READY then prints
    ``<path>`` without a number (append the mount number).

Quirks (what real cameras do that GStreamer's test server does not):
  * ``--max-sessions N``: at most N RTSP connections at once; the DESCRIBE
    of one more is answered ``503 Service Unavailable`` (the connection
    itself is accepted and counted by ``CLIENT``). With ``--audio opus``
    and N=1 this is the Opus camera that refuses a second session.
  * ``--video h265 --open-gop``: x265 with ``open-gop=1:repeat-headers=1``:
    the stream starts with an IDR, later keyframes are CRA (NAL type 21)
    each preceded in band by VPS/SPS/PPS. x265 emits RASL pictures (NAL
    types 8/9) after a CRA only with --bframes and when the frames between
    keyframes are not whole B..BP groups, e.g. --bframes 2 --gop 12 (not
    --gop 25 or 10).
  * ``--bframes [N]``: B-frames (H.264 Main profile; H.265 too), so packet
    PTS != DTS.
  * ``--video mjpeg``: ``jpegenc ! rtpjpegpay`` (RFC 2435, ``JPEG/90000``,
    static payload type 26).
  * ``--resize-after SECONDS --resize-to WxH``: the video changes resolution
    while the session goes on (new SPS in band at the next keyframe).
  * ``--aggregate``: H.264/H.265 aggregation packets, as some cameras send:
    ``rtph264pay aggregate-mode=max-stap`` / ``rtph265pay aggregate-mode=max``
    pack the NAL units of one access unit that fit the MTU together, so the
    in-band parameter sets before each keyframe (and small slices) go out
    in STAP-A (RFC 6184 §5.7.1, NAL type 24) / AP (RFC 7798 §4.4.2, type 48)
    packets.
  Loss, a first packet in the middle of a fragmented NAL unit and RTP
  timestamps jumping back are made by testkit/src/udp_relay.rs.

Must run under Debian's /usr/bin/python3 (python3-gi, gir1.2-gst-rtsp-server-1.0).

Notes learned the hard way:
  * Put SPS/PPS in-band with ``h264parse config-interval=-1``, NOT with
    ``rtph264pay config-interval=-1``: the payloader variant splits multi-slice
    keyframes (x264 tune=zerolatency uses sliced threads) and ffmpeg reports
    decode errors.
  * 8 kHz audio needs 20 ms buffers (samplesperbuffer=160) and a non-leaky
    queue, otherwise the video frame rate of the shared pipeline halves.
"""

import argparse
import os
import signal
import sys
import threading

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402


def parse_size(text):
    try:
        w, h = text.lower().split("x", 1)
        w, h = int(w), int(h)
    except ValueError:
        raise argparse.ArgumentTypeError("size must look like 640x360")
    if w <= 0 or h <= 0 or w % 2 or h % 2:
        raise argparse.ArgumentTypeError("width and height must be positive and even")
    return w, h


def parse_args(argv):
    p = argparse.ArgumentParser(description="scriptable RTSP test camera")
    p.add_argument("--address", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=8554, help="TCP port; 0 picks a free one")
    p.add_argument("--mounts", type=int, default=0,
                   help="fan-out mode: one H.264 encoder on mounts <path>0..<path>M-1")
    p.add_argument("--pattern", default="ball",
                   help="videotestsrc pattern: ball (compresses to ~100 kbit/s) or snow "
                        "(noise: fills the target bitrate like a real camera)")
    p.add_argument("--path", default="/test", help="mount path (default /test)")
    p.add_argument("--video", choices=["h264", "h265", "mjpeg", "none"], default="h264")
    p.add_argument("--audio", choices=["aac", "pcma", "pcmu", "opus", "none"], default="none")
    p.add_argument("--fps", type=int, default=25)
    p.add_argument("--size", type=parse_size, default=(640, 360), help="WxH, e.g. 640x360")
    p.add_argument("--bitrate", type=int, default=1000, help="video bitrate in kbit/s")
    p.add_argument("--gop", type=int, default=25, help="keyframe interval in frames")
    p.add_argument("--bframes", type=int, nargs="?", const=2, default=0,
                   help="use B-frames (H.264/H.265; default 2 when given without value)")
    p.add_argument("--open-gop", action="store_true",
                   help="H.265: IDR first, then CRA keyframes (open GOP) with VPS/SPS/PPS in band")
    p.add_argument("--max-sessions", type=int, default=0,
                   help="answer DESCRIBE with 503 while this many RTSP connections are open "
                        "(0: no limit)")
    p.add_argument("--resize-after", type=float, default=0.0,
                   help="seconds after the media starts playing when the video switches to "
                        "--resize-to (0: never)")
    p.add_argument("--resize-to", type=parse_size, default=(320, 180),
                   help="WxH after --resize-after (default 320x180)")
    p.add_argument("--aggregate", action="store_true",
                   help="H.264/H.265: aggregation packets (STAP-A / AP) for the NAL units of "
                        "an access unit that fit the MTU together (parameter sets, small slices)")
    p.add_argument("--user", help="require RTSP auth (see --auth) with this user")
    p.add_argument("--pass", dest="password", help="password for --user")
    p.add_argument("--auth", choices=["digest", "basic"], default="digest",
                   help="the one RTSP auth scheme offered with --user (default digest)")
    p.add_argument("--exit-with-stdin", action="store_true",
                   help="exit when stdin reaches EOF (the parent process is gone)")
    p.add_argument("--print-pipeline", action="store_true",
                   help="print the launch line to stderr")
    a = p.parse_args(argv)
    if not a.path.startswith("/"):
        p.error("--path must start with /")
    if (a.user is None) != (a.password is None):
        p.error("--user and --pass go together")
    if a.video == "none" and a.audio == "none":
        p.error("need at least one of --video / --audio")
    if a.fps <= 0 or a.gop <= 0 or a.bitrate <= 0:
        p.error("--fps, --gop and --bitrate must be positive")
    if a.bframes and a.video not in ("h264", "h265"):
        p.error("--bframes is only supported with --video h264/h265")
    if a.open_gop and a.video != "h265":
        p.error("--open-gop is only supported with --video h265")
    if a.aggregate and a.video not in ("h264", "h265"):
        p.error("--aggregate is only supported with --video h264/h265")
    if a.max_sessions < 0 or a.resize_after < 0:
        p.error("--max-sessions and --resize-after must not be negative")
    if a.mounts < 0:
        p.error("--mounts must not be negative")
    if a.mounts and (a.video != "h264" or a.audio != "none" or a.bframes or a.aggregate):
        p.error("--mounts serves H.264 video only (no audio, no B-frames, no aggregation)")
    return a


def have(element):
    return Gst.ElementFactory.find(element) is not None


def video_branch(a, pay):
    w, h = a.size
    src = (
        f"videotestsrc is-live=true pattern={a.pattern} motion=wavy animation-mode=running-time "
        f"! video/x-raw,format=I420,framerate={a.fps}/1 "
        f"! videoscale ! capsfilter name=size caps=video/x-raw,width={w},height={h} "
        f"! queue max-size-buffers=5 "
    ) if a.resize_after else (
        f"videotestsrc is-live=true pattern={a.pattern} motion=wavy animation-mode=running-time "
        f"! video/x-raw,format=I420,width={w},height={h},framerate={a.fps}/1 "
        f"! queue max-size-buffers=5 "
    )
    if a.video == "mjpeg":
        return src + f"! jpegenc quality=80 ! rtpjpegpay pt=26 name=pay{pay}"
    # The parsers (or x265's repeat-headers) put the parameter sets in the
    # keyframe's access unit; "max" aggregates every NAL unit of one
    # timestamp that fits, so they travel in one STAP-A / AP. (The H.264
    # payloader names its mode "max-stap".)
    aggregate = ""
    if a.aggregate:
        aggregate = " aggregate-mode=" + ("max-stap" if a.video == "h264" else "max")
    if a.video == "h264":
        if a.bframes:
            # tune=zerolatency forces bframes=0, so spell out low-latency
            # options instead. Inside GstRtspServer x264enc otherwise settles
            # on constrained-baseline (no B-frames), so pin profile=main.
            enc = (
                f"x264enc speed-preset=ultrafast bitrate={a.bitrate} key-int-max={a.gop} "
                f"bframes={a.bframes} b-adapt=false rc-lookahead={a.bframes + 1} "
                f"sync-lookahead=0 threads=1 ! video/x-h264,profile=main "
            )
        else:
            enc = (
                f"x264enc tune=zerolatency speed-preset=ultrafast bitrate={a.bitrate} "
                f"key-int-max={a.gop} "
            )
        return (
            src + "! " + enc
            + "! h264parse config-interval=-1 "
            + f"! rtph264pay pt=96 name=pay{pay}{aggregate}"
        )
    # h265
    if a.open_gop or a.bframes:
        # tune=zerolatency forces bframes=0 and closed GOPs; x265's own
        # repeat-headers puts VPS/SPS/PPS before every keyframe (CRA ones
        # too), which h265parse config-interval=-1 would do only for IDR.
        opts = [f"keyint={a.gop}", f"min-keyint={a.gop}", "scenecut=0",
                f"bframes={a.bframes}", "b-adapt=0", f"rc-lookahead={max(a.bframes, 1) + 1}",
                "repeat-headers=1", "frame-threads=1"]
        opts.append("open-gop=1" if a.open_gop else "open-gop=0")
        if a.bframes:
            # Flat B-frames: each B-B-P group references only its ends, as
            # a simple camera's encoder does.
            opts.append("b-pyramid=0")
        enc = (
            f"x265enc speed-preset=ultrafast bitrate={a.bitrate} "
            f"option-string={':'.join(opts)} "
        )
        return src + "! " + enc + "! h265parse " + f"! rtph265pay pt=96 name=pay{pay}{aggregate}"
    return (
        src
        + f"! x265enc tune=zerolatency speed-preset=ultrafast bitrate={a.bitrate} "
        + f"key-int-max={a.gop} "
        + "! h265parse config-interval=-1 "
        + f"! rtph265pay pt=96 name=pay{pay}{aggregate}"
    )


def aac_encoder():
    for name in ("avenc_aac", "voaacenc", "fdkaacenc"):
        if have(name):
            return name
    sys.exit("camera.py: no AAC encoder (avenc_aac / voaacenc / fdkaacenc) installed")


def audio_branch(a, pay):
    # 20 ms buffers everywhere; a plain (non-leaky) queue decouples the branch.
    if a.audio == "aac":
        return (
            "audiotestsrc is-live=true wave=sine freq=440 volume=0.3 samplesperbuffer=960 "
            "! audio/x-raw,rate=48000,channels=2 ! queue ! audioconvert ! audioresample "
            f"! {aac_encoder()} bitrate=128000 ! aacparse "
            f"! rtpmp4gpay pt=97 name=pay{pay}"
        )
    if a.audio in ("pcma", "pcmu"):
        enc, payer, pt = (
            ("alawenc", "rtppcmapay", 8) if a.audio == "pcma" else ("mulawenc", "rtppcmupay", 0)
        )
        return (
            "audiotestsrc is-live=true wave=sine freq=440 volume=0.3 samplesperbuffer=160 "
            "! audio/x-raw,format=S16LE,rate=8000,channels=1 ! queue "
            f"! {enc} ! {payer} pt={pt} name=pay{pay}"
        )
    # opus
    return (
        "audiotestsrc is-live=true wave=sine freq=440 volume=0.3 samplesperbuffer=960 "
        "! audio/x-raw,rate=48000,channels=2 ! queue ! audioconvert ! audioresample "
        "! opusenc bitrate=64000 frame-size=20 "
        f"! rtpopuspay pt=97 name=pay{pay}"
    )


def not_seekable(_pad, info):
    query = info.get_query()
    if query is not None and query.type == Gst.QueryType.SEEKING:
        # A fresh SEEKING query already says "not seekable"; answering it
        # unchanged is enough (and the query is not writable from Python).
        return Gst.PadProbeReturn.HANDLED
    return Gst.PadProbeReturn.OK


def schedule_resize(a, media):
    """--resize-after: change the size capsfilter's caps once, that many
    seconds after this media was configured (the encoder renegotiates and
    starts a keyframe with a new SPS)."""
    size = media.get_element().get_by_name("size")
    if size is None:
        return
    w, h = a.resize_to

    def resize():
        size.set_property("caps", Gst.Caps.from_string(f"video/x-raw,width={w},height={h}"))
        print(f"RESIZED {w}x{h}", flush=True)
        return GLib.SOURCE_REMOVE

    GLib.timeout_add(int(a.resize_after * 1000), resize)


def on_media_configure(_factory, media):
    # A real camera is live and cannot seek. videotestsrc however answers the
    # SEEKING query with "seekable", so every PLAY carrying "Range: npt=0-"
    # (ffmpeg always sends one) would flush-seek the *shared* pipeline back to
    # 0: all other clients see their timestamps jump back and the encoder
    # restarts with a fresh keyframe. Answer "not seekable" at each payloader.
    bin_ = media.get_element()
    i = 0
    while True:
        pay = bin_.get_by_name(f"pay{i}")
        if pay is None:
            break
        pay.get_static_pad("src").add_probe(Gst.PadProbeType.QUERY_UPSTREAM, not_seekable)
        i += 1


class FanOut:
    """--mounts: one encoder whose access units are pushed into the appsrc of
    every prepared mount."""

    CAPS = "video/x-h264,stream-format=byte-stream,alignment=au"

    def __init__(self, a):
        w, h = a.size
        self.encoder = Gst.parse_launch(
            f"videotestsrc is-live=true pattern={a.pattern} "
            f"! video/x-raw,format=I420,width={w},height={h},framerate={a.fps}/1 "
            f"! x264enc tune=zerolatency speed-preset=ultrafast bitrate={a.bitrate} "
            f"vbv-buf-capacity=1000 key-int-max={a.gop} "
            f"! h264parse config-interval=-1 ! {self.CAPS} "
            "! appsink name=sink emit-signals=true sync=false max-buffers=25 drop=true"
        )
        self.sources = set()
        self.lock = threading.Lock()
        self.encoder.get_by_name("sink").connect("new-sample", self.on_sample)

    def launch(self):
        return (
            f"( appsrc name=src is-live=true format=time do-timestamp=true caps={self.CAPS} "
            "! h264parse ! rtph264pay pt=96 name=pay0 )"
        )

    def on_sample(self, appsink):
        sample = appsink.emit("pull-sample")
        if sample is None:
            return Gst.FlowReturn.OK
        buf = sample.get_buffer()
        with self.lock:
            targets = list(self.sources)
        for src in targets:
            # A shallow copy (shared memory) without the encoder's timestamps
            # (x264 starts at 1000 h): appsrc's do-timestamp stamps each with
            # its own pipeline's running time.
            out = buf.copy()
            out.pts = out.dts = Gst.CLOCK_TIME_NONE
            src.emit("push-buffer", out)
        return Gst.FlowReturn.OK

    def on_configure(self, _factory, media):
        src = media.get_element().get_by_name("src")
        with self.lock:
            self.sources.add(src)

        def gone(_media):
            with self.lock:
                self.sources.discard(src)

        media.connect("unprepared", gone)


def launch_line(a):
    branches = []
    if a.video != "none":
        branches.append(video_branch(a, len(branches)))
    if a.audio != "none":
        branches.append(audio_branch(a, len(branches)))
    return "( " + "  ".join(branches) + " )"


def main(argv):
    a = parse_args(argv)
    Gst.init(None)

    fanout = FanOut(a) if a.mounts else None
    launch = fanout.launch() if fanout else launch_line(a)
    if a.print_pipeline:
        print(launch, file=sys.stderr, flush=True)

    server = GstRtspServer.RTSPServer()
    server.set_address(a.address)
    server.set_service(str(a.port))
    if fanout:
        # DESCRIBE waits for the mount's pipeline to prepare; with the default
        # single thread, 100 cameras connecting at once would queue for minutes.
        server.get_thread_pool().set_max_threads(max(16, a.mounts + 8))

    active = set()

    def on_pre_describe(client, _ctx):
        # A camera with room for N sessions: the (N+1)th is refused before
        # any media is built, as cameras with one encoder channel do.
        if a.max_sessions and len(active - {client}) >= a.max_sessions:
            print("REFUSED 503", flush=True)
            return GstRtsp.RTSPStatusCode.SERVICE_UNAVAILABLE
        return GstRtsp.RTSPStatusCode.OK

    def on_client(_server, client):
        conn = client.get_connection()
        ip = conn.get_ip() if conn is not None else "?"
        print(f"CLIENT {ip}", flush=True)
        if a.max_sessions:
            active.add(client)
            client.connect("closed", lambda c: active.discard(c))
            client.connect("pre-describe-request", on_pre_describe)

    server.connect("client-connected", on_client)

    def make_factory():
        f = GstRtspServer.RTSPMediaFactory()
        f.set_launch(launch)
        # One pipeline for every session, as a camera with one encoder has.
        # Except with Opus: rtspgate reads an Opus track in a second RTSP
        # session (retina has no Opus depacketizer; one-session Opus is
        # issue 12), and GStreamer's server answers 503 to a second session
        # that races the first one's PLAY on a shared media, then keeps
        # answering 503. Cameras that give each session its own stream
        # exist too; that is the kind this one plays with Opus.
        f.set_shared(a.audio != "opus")
        f.connect("media-configure", on_media_configure)
        if a.resize_after:
            f.connect("media-configure", lambda _f, m: schedule_resize(a, m))
        if fanout:
            f.connect("media-configure", fanout.on_configure)
        return f

    factory = make_factory()

    if a.user is not None:
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, a.user)
        if a.auth == "basic":
            # Only Basic is offered (WWW-Authenticate: Basic), like many
            # older cameras.
            auth.set_supported_methods(GstRtsp.RTSPAuthMethod.BASIC)
            auth.add_basic(GstRtspServer.RTSPAuth.make_basic(a.user, a.password), token)
        else:
            auth.set_supported_methods(GstRtsp.RTSPAuthMethod.DIGEST)
            auth.add_digest(a.user, a.password, token)
        server.set_auth(auth)
        # Only the authenticated role may access and construct the media; there
        # is no default token, so anonymous requests get 401.
        role = Gst.Structure.new_from_string(
            f"{a.user}, media.factory.access=(boolean)true, "
            f"media.factory.construct=(boolean)true"
        )
        if role is None:
            sys.exit(f"camera.py: user name {a.user!r} is not a valid role name")
        factory.add_role_from_structure(role)

    if fanout:
        for i in range(a.mounts):
            f = factory if i == 0 else make_factory()
            if a.user is not None and i > 0:
                f.add_role_from_structure(role)
            server.get_mount_points().add_factory(f"{a.path}{i}", f)
    else:
        server.get_mount_points().add_factory(a.path, factory)

    loop = GLib.MainLoop()
    try:
        ok = server.attach(None) != 0
    except GLib.Error as e:
        print(f"camera.py: {e}", file=sys.stderr)
        ok = False
    if not ok:
        print(f"camera.py: cannot listen on {a.address}:{a.port} (port in use?)",
              file=sys.stderr, flush=True)
        return 2
    port = server.get_bound_port()

    def stop(*_):
        loop.quit()
        return GLib.SOURCE_REMOVE

    GLib.unix_signal_add(GLib.PRIORITY_HIGH, signal.SIGTERM, stop)
    GLib.unix_signal_add(GLib.PRIORITY_HIGH, signal.SIGINT, stop)

    if a.exit_with_stdin:
        # A camera shared by several tests lives as long as the test process,
        # whose end closes the pipe: no camera outlives its tests.
        def on_stdin(fd, _cond):
            try:
                data = os.read(fd, 4096)
            except OSError:
                data = b""
            if not data:
                loop.quit()
                return False
            return True

        GLib.io_add_watch(sys.stdin.fileno(), GLib.PRIORITY_DEFAULT,
                          GLib.IOCondition.IN | GLib.IOCondition.HUP | GLib.IOCondition.ERR,
                          on_stdin)

    if fanout:
        fanout.encoder.set_state(Gst.State.PLAYING)
    print(f"READY rtsp://{a.address}:{port}{a.path}", flush=True)
    loop.run()
    if fanout:
        fanout.encoder.set_state(Gst.State.NULL)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
