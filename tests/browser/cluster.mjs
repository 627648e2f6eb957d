// Steering in Chromium: a broadcaster goes live from /live on one cluster node, and a player
// opened on a node that is past its capacity (--steer-max-viewers 0) is redirected by the
// server to the node with room, follows it (the SDK does), and decodes the broadcast there.
//
//   node tests/browser/cluster.mjs http://127.0.0.1:<origin> http://127.0.0.1:<full node>
//
// Exit status 0 when every check passed. tests/tests/cluster.rs starts Redis and the nodes.
import { assert, launch, log, sleep, step } from './chromium.mjs';

const [origin, full] = process.argv.slice(2).map((u) => (u || '').replace(/\/$/, ''));
if (![origin, full].every((u) => /^http:\/\/127\.0\.0\.1:\d+$/.test(u))) {
  console.error('usage: node tests/browser/cluster.mjs http://127.0.0.1:<origin> http://127.0.0.1:<full node>');
  process.exit(2);
}
const WAIT_MS = 20_000;
const STREAM = 'cluster-cam';
setTimeout(() => {
  log('FAIL: timed out');
  process.exit(1);
}, 90_000).unref();

function framesDecoded(page) {
  return page.evaluate(async () => {
    const pc = window.golive && window.golive.pc;
    if (!pc) return 0;
    let frames = 0;
    (await pc.getStats()).forEach((r) => {
      if (r.type === 'inbound-rtp' && r.kind === 'video') frames = r.framesDecoded || 0;
    });
    return frames;
  });
}

const browser = await launch();
try {
  const ctx = await browser.newContext({ permissions: ['camera', 'microphone'] });
  const live = await ctx.newPage();
  await step('the broadcaster goes live on the origin node', async () => {
    await live.goto(`${origin}/live`);
    await live.waitForFunction(() => document.body.dataset.state === 'preview', null, { timeout: WAIT_MS });
    await live.fill('#name', STREAM);
    await live.fill('#title', 'cluster steering');
    await live.click('#go');
    await live.waitForFunction(() => document.body.dataset.state === 'live', null, { timeout: WAIT_MS });
  });

  const player = await ctx.newPage();
  player.on('console', (m) => m.type() === 'error' && log(`player console.error: ${m.text()}`));
  await step('a player opened on the full node is redirected to the origin and decodes', async () => {
    await player.goto(`${full}/watch/${STREAM}`);
    await player.waitForFunction(() => document.body.dataset.state === 'live', null, { timeout: WAIT_MS });
    const url = await player.evaluate(() => window.golive.signal.url);
    const want = origin.replace('http://', 'ws://') + '/ws';
    assert(url === want, `the player's socket is at ${url}, not ${want}`);
    const before = await framesDecoded(player);
    await sleep(2000);
    const after = await framesDecoded(player);
    log(`framesDecoded ${before} then ${after} two seconds later`);
    assert(after > before && after > 10, `frames decoded: ${before} then ${after}`);
  });
  log('browser cluster: all checks passed');
} finally {
  await browser.close();
}
