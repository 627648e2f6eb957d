// WHIP and WHEP from a plain web page in Chromium, with nothing but fetch() and
// RTCPeerConnection: the page is served from one origin (http://localhost:PORT) and talks to
// the server as another (http://127.0.0.1:PORT), so CORS (preflight, exposed Location/ETag) is
// exercised as a page on another site would.
//
//   node tests/browser/whip.mjs http://127.0.0.1:8080
//
// Publishes the fake camera with WHIP, plays it with WHEP in a second page until frames decode,
// trickles nothing (the offers wait for ICE gathering), DELETEs both sessions and checks the
// stream is gone. Exit status 0 when every check passed.
import { launch } from './chromium.mjs';

const api = (process.argv[2] || '').replace(/\/$/, '');
if (!/^http:\/\/127\.0\.0\.1:\d+$/.test(api)) {
  console.error('usage: node tests/browser/whip.mjs http://127.0.0.1:<port>');
  process.exit(2);
}
const pageOrigin = api.replace('127.0.0.1', 'localhost');

function fail(msg) {
  console.error('FAIL:', msg);
  process.exit(1);
}

const timer = setTimeout(() => fail('timed out'), 60_000);
const browser = await launch();
try {
  const ctx = await browser.newContext({ permissions: ['camera', 'microphone'] });
  const publisher = await ctx.newPage();
  await publisher.goto(pageOrigin + '/');
  const pub = await publisher.evaluate(async (api) => {
    const stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: true });
    const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle' });
    for (const t of stream.getTracks()) pc.addTransceiver(t, { direction: 'sendonly' });
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise((r) => {
      if (pc.iceGatheringState === 'complete') r();
      pc.onicegatheringstatechange = () => pc.iceGatheringState === 'complete' && r();
      setTimeout(r, 3000);
    });
    const res = await fetch(api + '/whip/chrome', {
      method: 'POST',
      headers: { 'Content-Type': 'application/sdp' },
      body: pc.localDescription.sdp,
    });
    const out = {
      status: res.status,
      location: res.headers.get('Location'),
      etag: res.headers.get('ETag'),
      type: res.headers.get('Content-Type'),
    };
    const body = await res.text();
    if (res.status !== 201) return { ...out, body };
    await pc.setRemoteDescription({ type: 'answer', sdp: body });
    window.pc = pc;
    for (let i = 0; i < 100 && pc.connectionState !== 'connected'; i++) {
      await new Promise((r) => setTimeout(r, 100));
    }
    return { ...out, state: pc.connectionState };
  }, api);
  console.log('WHIP publish:', JSON.stringify(pub));
  if (pub.status !== 201) fail(`WHIP POST answered ${pub.status}: ${pub.body}`);
  if (!pub.location || !pub.location.startsWith('/whip/chrome/')) fail('Location not readable cross-origin');
  if (!pub.etag) fail('ETag not readable cross-origin');
  if (pub.type !== 'application/sdp') fail(`answer type ${pub.type}`);
  if (pub.state !== 'connected') fail(`publisher ${pub.state}`);

  const viewer = await ctx.newPage();
  await viewer.goto(pageOrigin + '/');
  const view = await viewer.evaluate(async (api) => {
    const pc = new RTCPeerConnection();
    pc.addTransceiver('video', { direction: 'recvonly' });
    pc.addTransceiver('audio', { direction: 'recvonly' });
    const video = document.createElement('video');
    video.muted = true;
    video.autoplay = true;
    document.body.appendChild(video);
    const ms = new MediaStream();
    video.srcObject = ms;
    pc.ontrack = (e) => ms.addTrack(e.track);
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise((r) => {
      if (pc.iceGatheringState === 'complete') r();
      pc.onicegatheringstatechange = () => pc.iceGatheringState === 'complete' && r();
      setTimeout(r, 3000);
    });
    const res = await fetch(api + '/whep/chrome', {
      method: 'POST',
      headers: { 'Content-Type': 'application/sdp' },
      body: pc.localDescription.sdp,
    });
    const body = await res.text();
    if (res.status !== 201) return { status: res.status, body };
    const location = res.headers.get('Location');
    await pc.setRemoteDescription({ type: 'answer', sdp: body });
    let frames = 0;
    let width = 0;
    for (let i = 0; i < 150 && frames < 30; i++) {
      await new Promise((r) => setTimeout(r, 100));
      (await pc.getStats()).forEach((s) => {
        if (s.type === 'inbound-rtp' && s.kind === 'video') {
          frames = s.framesDecoded || 0;
          width = s.frameWidth || 0;
        }
      });
    }
    const del = await fetch(api + location, { method: 'DELETE' });
    pc.close();
    return { status: res.status, location, frames, width, deleteStatus: del.status };
  }, api);
  console.log('WHEP play:', JSON.stringify(view));
  if (view.status !== 201) fail(`WHEP POST answered ${view.status}: ${view.body}`);
  if (view.frames < 30) fail(`the WHEP player decoded only ${view.frames} frames`);
  if (view.deleteStatus !== 200) fail(`WHEP DELETE answered ${view.deleteStatus}`);

  const end = await publisher.evaluate(async ([api, location]) => {
    const res = await fetch(api + location, { method: 'DELETE' });
    window.pc.close();
    const list = await (await fetch('/api/streams')).json();
    return { status: res.status, live: list.length };
  }, [api, pub.location]);
  console.log('WHIP end:', JSON.stringify(end));
  if (end.status !== 200) fail(`WHIP DELETE answered ${end.status}`);
  if (end.live !== 0) fail('the stream is still listed after DELETE');
  console.log('PASS: WHIP publish and WHEP play from a page on another origin');
} finally {
  clearTimeout(timer);
  await browser.close();
}
