"""WHIP publisher and WHEP player built on aiortc: an independent WebRTC stack for golive's tests.

    aiortc_client.py publish <endpoint-url> <seconds> [--token T]
    aiortc_client.py watch   <endpoint-url> <seconds>

`publish` POSTs an offer (VP8 video from a synthetic moving pattern, Opus audio) to a WHIP
endpoint, streams for <seconds>, then DELETEs the session. `watch` POSTs a recvonly offer to a
WHEP endpoint and decodes what arrives for <seconds>. Both print one JSON line with what they
saw and exit non-zero when the exchange failed or (for watch) no frame was decoded.
"""

import asyncio
import fractions
import json
import sys
import time
import urllib.error
import urllib.request

import aioice.ice

# aioice leaves out loopback addresses; these tests live on 127.0.0.1 only.
aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]

from aiortc import (  # noqa: E402
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
    VideoStreamTrack,
)
from aiortc.mediastreams import AudioStreamTrack  # noqa: E402
from av import VideoFrame  # noqa: E402


class Pattern(VideoStreamTrack):
    """Frames whose brightness changes every frame, so every encoded frame differs."""

    def __init__(self):
        super().__init__()
        self.n = 0

    async def recv(self):
        pts, time_base = await self.next_timestamp()
        self.n += 1
        frame = VideoFrame(width=320, height=240)
        luma, *chroma = frame.planes
        luma.update(bytes([(self.n * 3) % 256]) * luma.buffer_size)
        for plane in chroma:
            plane.update(bytes([128]) * plane.buffer_size)
        frame.pts = pts
        frame.time_base = time_base
        return frame


def http(method, url, body=None, headers=None):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


async def negotiate(pc, url, token=None):
    await pc.setLocalDescription(await pc.createOffer())
    headers = {"Content-Type": "application/sdp"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    status, hdrs, body = await asyncio.to_thread(
        http, "POST", url, pc.localDescription.sdp.encode(), headers
    )
    if status != 201:
        raise SystemExit(json.dumps({"error": "post", "status": status, "body": body}))
    location = hdrs.get("Location") or hdrs.get("location")
    if not location or not location.startswith("/"):
        raise SystemExit(json.dumps({"error": "location", "location": location}))
    if hdrs.get("Content-Type", hdrs.get("content-type", "")).split(";")[0] != "application/sdp":
        raise SystemExit(json.dumps({"error": "content-type", "headers": hdrs}))
    await pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))
    base = url.split("/whip/")[0].split("/whep/")[0]
    return base + location, hdrs


async def wait_connected(pc, seconds=10):
    deadline = time.monotonic() + seconds
    while pc.connectionState != "connected":
        if pc.connectionState == "failed" or time.monotonic() > deadline:
            raise SystemExit(json.dumps({"error": "connect", "state": pc.connectionState}))
        await asyncio.sleep(0.05)


async def until_stopped(seconds):
    """Waits `seconds`, or less if a line (or end of file) arrives on stdin first: a test that
    pipes stdin decides when the broadcast ends, however late its viewers got going."""
    reader = asyncio.ensure_future(asyncio.to_thread(sys.stdin.readline))
    await asyncio.wait([reader], timeout=seconds)


async def publish(url, seconds, token):
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver(Pattern(), direction="sendonly")
    pc.addTransceiver(AudioStreamTrack(), direction="sendonly")
    resource, hdrs = await negotiate(pc, url, token)
    await wait_connected(pc)
    await until_stopped(seconds)
    stats = await pc.getStats()
    sent = sum(s.packetsSent for s in stats.values() if s.type == "outbound-rtp")
    status, _, _ = await asyncio.to_thread(http, "DELETE", resource)
    await pc.close()
    print(json.dumps({"resource": resource, "etag": hdrs.get("ETag") or hdrs.get("etag"),
                      "packets_sent": sent, "delete_status": status}))
    return 0 if status == 200 and sent > 0 else 1


async def watch(url, seconds):
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("video", direction="recvonly")
    pc.addTransceiver("audio", direction="recvonly")
    seen = {"video_frames": 0, "audio_frames": 0, "width": 0, "height": 0}

    async def consume(track):
        while True:
            try:
                frame = await track.recv()
            except Exception:
                return
            if track.kind == "video":
                seen["video_frames"] += 1
                seen["width"], seen["height"] = frame.width, frame.height
            else:
                seen["audio_frames"] += 1

    pc.on("track", lambda track: asyncio.ensure_future(consume(track)))
    resource, _ = await negotiate(pc, url)
    await wait_connected(pc)
    await asyncio.sleep(seconds)
    status, _, _ = await asyncio.to_thread(http, "DELETE", resource)
    await pc.close()
    seen.update({"resource": resource, "delete_status": status})
    print(json.dumps(seen))
    return 0 if seen["video_frames"] > 0 and seen["audio_frames"] > 0 else 1


def main():
    mode, url, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    token = sys.argv[5] if len(sys.argv) > 5 and sys.argv[4] == "--token" else None
    coro = publish(url, seconds, token) if mode == "publish" else watch(url, seconds)
    sys.exit(asyncio.run(coro))


if __name__ == "__main__":
    main()
