// A viewer on werift (npm), a TypeScript WebRTC stack that shares no code with webrtc-rs or
// the browsers: it plays a golive stream as a WHEP player or over golive's WebSocket protocol,
// receive-only audio and video, and reports what arrived. It decodes nothing; it checks that
// VP8 frames arrive (a frame ends at the RTP marker bit, the first one is a keyframe) and that
// every track's sequence numbers run on without a gap.
//
//   node tests/browser/werift_viewer.mjs whep http://127.0.0.1:8080 <stream> [seconds]
//   node tests/browser/werift_viewer.mjs ws   http://127.0.0.1:8080 <stream> [seconds]
//
// Prints one JSON line (the last line of stdout) and exits 0 when it connected, received both
// kinds and found no gap; 1 otherwise.
import {
  RTCPeerConnection,
  RTCRtpCodecParameters,
  useNACK,
  usePLI,
} from 'werift';

const [mode, base, stream, secondsArg] = process.argv.slice(2);
if (!['whep', 'ws'].includes(mode) || !/^http:\/\/[^/]+$/.test(base || '') || !stream) {
  console.error('usage: node werift_viewer.mjs whep|ws http://host:port <stream> [seconds]');
  process.exit(2);
}
const seconds = Number(secondsArg || 4);
const report = { mode, stream };
const started = performance.now();
const since = () => Math.round((performance.now() - started) * 10) / 10;

function finish(ok, error) {
  if (error) report.error = String(error);
  console.log(JSON.stringify(report));
  process.exit(ok ? 0 : 1);
}
const watchdog = setTimeout(() => finish(false, 'timed out'), (seconds + 30) * 1000);

const pc = new RTCPeerConnection({
  // No STUN server: only host candidates, loopback among them.
  iceServers: [],
  iceAdditionalHostAddresses: ['127.0.0.1'],
  iceUseIpv6: false,
  // Chromium's payload types and feedback, so the server's answer is the one a browser gets.
  codecs: {
    video: [
      new RTCRtpCodecParameters({
        mimeType: 'video/VP8',
        clockRate: 90000,
        payloadType: 96,
        rtcpFeedback: [useNACK(), usePLI()],
      }),
    ],
    audio: [
      new RTCRtpCodecParameters({
        mimeType: 'audio/opus',
        clockRate: 48000,
        channels: 2,
        payloadType: 111,
      }),
    ],
  },
});

// Per kind: packets, bytes, frames; per SSRC the last sequence number and the gaps seen.
const tracks = {
  video: { packets: 0, bytes: 0, frames: 0, keyframes: 0, ssrcs: new Set(), gaps: 0, last: new Map() },
  audio: { packets: 0, bytes: 0, ssrcs: new Set(), gaps: 0, last: new Map() },
};
report.first_video_is_keyframe = null;

// RFC 7741: the payload descriptor, then on a frame's first packet (S=1, PID=0) the frame tag,
// whose bit 0 is the inverse keyframe flag.
function vp8KeyframeStart(p) {
  if (p.length < 1) return false;
  let i = 1;
  const x = p[0] & 0x80;
  const s = p[0] & 0x10;
  const pid = p[0] & 0x07;
  if (x) {
    if (p.length < 2) return false;
    const ext = p[1];
    i = 2;
    if (ext & 0x80) i += p[i] & 0x80 ? 2 : 1; // PictureID, 7 or 15 bits
    if (ext & 0x40) i += 1; // TL0PICIDX
    if (ext & 0x30) i += 1; // TID/KEYIDX
  }
  return Boolean(s) && pid === 0 && i < p.length && (p[i] & 0x01) === 0;
}

function count(kind, rtp) {
  const t = tracks[kind];
  const { sequenceNumber: seq, ssrc, marker } = rtp.header;
  t.packets += 1;
  t.bytes += rtp.payload.length;
  t.ssrcs.add(ssrc);
  const last = t.last.get(ssrc);
  if (last !== undefined && seq !== ((last + 1) & 0xffff)) {
    t.gaps += 1;
    if (t.gaps <= 5) console.error(`${kind} ssrc ${ssrc}: ${last} then ${seq}`);
  }
  t.last.set(ssrc, seq);
  if (kind === 'video') {
    if (vp8KeyframeStart(rtp.payload)) {
      t.keyframes += 1;
      if (report.first_keyframe_ms === undefined) report.first_keyframe_ms = since();
    }
    if (report.first_video_is_keyframe === null) {
      report.first_video_is_keyframe = vp8KeyframeStart(rtp.payload);
      report.first_video_ms = since();
    }
    if (marker) {
      t.frames += 1;
      if (t.frames === 1) report.first_frame_ms = since();
    }
  }
}

pc.onTrack.subscribe((track) => {
  const kind = track.kind;
  if (!tracks[kind]) return;
  track.onReceiveRtp.subscribe((rtp) => count(kind, rtp));
});
pc.connectionStateChange.subscribe((state) => {
  if (state === 'connected') {
    report.connected_ms = since();
    const dtls = pc.dtlsTransports[0];
    report.srtp_profile = dtls?.dtls?.srtp?.srtpProfile ?? null;
  }
  if (state === 'failed') finish(false, 'the peer connection failed');
});

pc.addTransceiver('video', { direction: 'recvonly' });
pc.addTransceiver('audio', { direction: 'recvonly' });
await pc.setLocalDescription(await pc.createOffer());
// No trickling: wait until the offer holds every candidate, as a WHEP player without trickle
// does.
if (pc.iceGatheringState !== 'complete') {
  await new Promise((resolve) => {
    pc.iceGatheringStateChange.subscribe((s) => s === 'complete' && resolve());
    setTimeout(resolve, 3000);
  });
}
const offer = pc.localDescription.sdp;

let close = async () => {};
try {
  if (mode === 'whep') {
    const res = await fetch(`${base}/whep/${stream}`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/sdp' },
      body: offer,
    });
    const body = await res.text();
    report.post_status = res.status;
    if (res.status !== 201) finish(false, `POST /whep: ${res.status} ${body}`);
    report.answer_ms = since();
    const location = new URL(res.headers.get('Location'), base).toString();
    await pc.setRemoteDescription({ type: 'answer', sdp: body });
    close = async () => {
      const r = await fetch(location, { method: 'DELETE' });
      report.delete_status = r.status;
    };
  } else {
    const ws = new WebSocket(base.replace(/^http/, 'ws') + '/ws');
    const answer = await new Promise((resolve, reject) => {
      ws.onopen = () => ws.send(JSON.stringify({ type: 'watch', stream, sdp: offer }));
      ws.onmessage = (m) => {
        const msg = JSON.parse(m.data);
        if (msg.type === 'answer') resolve(msg.sdp);
        if (msg.type === 'error') reject(new Error(`${msg.code}: ${msg.message}`));
      };
      ws.onerror = () => reject(new Error('WebSocket error'));
    });
    report.answer_ms = since();
    await pc.setRemoteDescription({ type: 'answer', sdp: answer });
    close = async () => {
      ws.send(JSON.stringify({ type: 'leave' }));
      ws.close();
    };
  }
} catch (e) {
  finish(false, e);
}

await new Promise((r) => setTimeout(r, seconds * 1000));
await close();
await pc.close();
clearTimeout(watchdog);

for (const [kind, t] of Object.entries(tracks)) {
  report[kind] = {
    packets: t.packets,
    bytes: t.bytes,
    ssrcs: t.ssrcs.size,
    sequence_gaps: t.gaps,
    ...(kind === 'video' ? { frames: t.frames, keyframes: t.keyframes } : {}),
  };
}
const ok =
  report.connected_ms !== undefined &&
  tracks.video.frames > 0 &&
  tracks.audio.packets > 0 &&
  report.first_video_is_keyframe === true &&
  tracks.video.gaps === 0 &&
  tracks.audio.gaps === 0;
finish(ok);
