#!/usr/bin/env python3
"""GStreamer rtsp-server as a reference server for the fan-out benchmark.

Serves one MPEG-TS sample, looped and paced in real time like ferrocast's live point is fed
(the same number of bytes every 40 ms tick), as ONE shared live media at rtsp://ADDRESS/PATH,
payloaded as MP2T over RTP with 7 TS packets per RTP packet (as ferrocast does), to RTSP
clients over RTP/UDP or RTP interleaved on the RTSP connection.

Debian: apt-get install python3-gi python3-gst-1.0 gir1.2-gst-rtsp-server-1.0
Run by tests/src/gst_reference.rs; by hand:
  python3 gst_rtsp_server.py --port 8554 --sample stream.ts --per-tick 21000
"""

import argparse
import sys
import threading
import time

try:
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtsp", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtsp, GstRtspServer
except (ImportError, ValueError) as error:
    sys.exit(
        f"GStreamer Python bindings missing ({error}): "
        "apt-get install python3-gi python3-gst-1.0 gir1.2-gst-rtsp-server-1.0"
    )

TICK = 0.040  # seconds between feeds, as the benchmark's paced encoder
TS_PACKET = 188
# 7 TS packets (1316 bytes) + the 12-byte RTP header: rtpmp2tpay fills up to the MTU.
RTP_MTU = 12 + 7 * TS_PACKET
# The appsrc gets data pushed at it; the pipeline below is all GStreamer's.
LAUNCH = (
    "( appsrc name=feed is-live=true format=time do-timestamp=true "
    "caps=video/mpegts,systemstream=true,packetsize=188 "
    "max-bytes=2000000 leaky-type=downstream "
    f"! rtpmp2tpay name=pay0 pt=33 mtu={RTP_MTU} )"
)


class Feeder:
    """Pushes the looped sample, `per_tick` bytes every tick, into the live media's appsrc.

    One position for the whole process: a media rebuilt after every client left picks the
    stream up where it is, as a live source would be."""

    def __init__(self, sample, per_tick):
        self.sample = sample
        self.per_tick = per_tick
        self.position = 0
        self.owed = 0
        self.appsrc = None  # the current media's appsrc, if one is prepared

    def run(self):
        due = time.monotonic()
        while True:
            due = max(due + TICK, time.monotonic())  # real time, no catch-up bursts
            time.sleep(max(0.0, due - time.monotonic()))
            chunk = self.next_chunk()
            appsrc = self.appsrc
            if appsrc is None:
                continue
            if appsrc.emit("push-buffer", Gst.Buffer.new_wrapped(chunk)) != Gst.FlowReturn.OK:
                self.appsrc = None  # that media was torn down (its last client left)

    def next_chunk(self):
        # Whole TS packets only (rtpmp2tpay cuts its input as it comes, so a buffer ending
        # mid-packet would split packets across RTP packets); what is left over goes with
        # the next tick, so the rate stays `per_tick` bytes a tick.
        self.owed += self.per_tick
        size = self.owed // TS_PACKET * TS_PACKET
        self.owed -= size
        out = bytearray()
        while len(out) < size:
            take = min(size - len(out), len(self.sample) - self.position)
            out += self.sample[self.position : self.position + take]
            self.position = (self.position + take) % len(self.sample)
        return bytes(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/live")
    parser.add_argument("--sample", required=True)
    parser.add_argument("--per-tick", type=int, required=True, help="bytes fed every 40 ms")
    args = parser.parse_args()

    Gst.init(None)
    with open(args.sample, "rb") as f:
        feeder = Feeder(f.read(), args.per_tick)

    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(LAUNCH)
    factory.set_shared(True)  # one pipeline, every client a sink of it
    factory.set_protocols(GstRtsp.RTSPLowerTrans.UDP | GstRtsp.RTSPLowerTrans.TCP)
    factory.connect(
        "media-configure",
        lambda _f, media: setattr(
            feeder, "appsrc", media.get_element().get_by_name("feed")
        ),
    )

    server = GstRtspServer.RTSPServer()
    server.set_address(args.address)
    server.set_service(str(args.port))
    server.get_mount_points().add_factory(args.path, factory)
    if server.attach(None) == 0:
        sys.exit(f"cannot listen on {args.address}:{args.port}")

    threading.Thread(target=feeder.run, daemon=True).start()
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
