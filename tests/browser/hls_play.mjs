// Plays an LL-HLS stream in headless Chromium with hls.js and prints one
// line of JSON with what the browser saw.
//
//   node tests/browser/hls_play.mjs URL [--frames N] [--seconds S] [--window W] [--timeout S]
//
// URL is the multivariant playlist (e.g. http://127.0.0.1:8888/cam/index.m3u8,
// or https:// with any certificate: it is not checked).
// The page and hls.js come from a throwaway HTTP server on another port of
// 127.0.0.1, so every playlist and part request is cross-origin and needs
// the gateway's CORS headers. Nothing is loaded from the internet.
//
// Plays until the video has decoded N frames (default 100) and a fixed
// window of W seconds (default 4) after the first decoded frame is over,
// then keeps playing S more seconds (default 0) sampling the latency twice a
// second, and exits. The window:
//   window: { seconds, frames (decoded in it), dropped, currentTimeAdvance,
//             rate (advance / seconds: about 1 when playing in real time),
//             stalls (hls.js bufferStalledError/bufferNudgeOnStall and the
//             element's "waiting" events in it), audioDecodedBytes, errors }
// Exit status 0 when N frames were decoded without a fatal hls.js error,
// 1 otherwise, 2 on bad usage; the JSON is printed either way:
//   { ok, frames, droppedFrames, presentedFrames, partsLoaded, fragmentsLoaded,
//     latency: { hls: [s...], wall: [s...] }, errors: [...], fatal, error? }
// `latency.hls` is hls.js's own estimate (`hls.latency`, seconds behind the
// live edge); `latency.wall` is Date.now() minus the EXT-X-PROGRAM-DATE-TIME
// of the frame on screen (`hls.playingDate`): how long after the gateway
// received a frame it is shown.

import { createServer } from 'node:http';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));

function usage(msg) {
  console.error(`hls_play.mjs: ${msg}\nusage: node hls_play.mjs URL [--frames N] [--seconds S] [--timeout S]`);
  process.exit(2);
}

const args = process.argv.slice(2);
const opts = { frames: 100, seconds: 0, window: 4, timeout: 40 };
let url = null;
for (let i = 0; i < args.length; i++) {
  const a = args[i];
  if (a.startsWith('--')) {
    const key = a.slice(2);
    if (!(key in opts)) usage(`unknown option ${a}`);
    const v = Number(args[++i]);
    if (!Number.isFinite(v) || v < 0) usage(`${a} needs a non-negative number`);
    opts[key] = v;
  } else if (url === null) {
    url = a;
  } else {
    usage(`unexpected argument ${a}`);
  }
}
if (!url || !/^https?:\/\/127\.0\.0\.1:\d+\//.test(url)) usage('URL must be http(s)://127.0.0.1:PORT/...');

const hlsJs = readFileSync(join(here, 'node_modules/hls.js/dist/hls.min.js'));
const page = `<!doctype html>
<meta charset="utf-8">
<video id="v" muted autoplay playsinline></video>
<script src="/hls.js"></script>
<script>
  window.report = { errors: [], fatal: null, partsLoaded: 0, fragmentsLoaded: 0,
                    presentedFrames: 0, latency: { hls: [], wall: [] } };
  const video = document.getElementById('v');
  report.waiting = 0;
  video.addEventListener('waiting', () => { report.waiting++; });
  if ('requestVideoFrameCallback' in video) {
    const count = () => { report.presentedFrames++; video.requestVideoFrameCallback(count); };
    video.requestVideoFrameCallback(count);
  }
  if (!Hls.isSupported()) {
    report.fatal = 'hls.js: Media Source Extensions not supported';
  } else {
    const hls = new Hls({ lowLatencyMode: true, enableWorker: true });
    window.hls = hls;
    hls.on(Hls.Events.ERROR, (_e, d) => {
      const what = d.type + '/' + d.details + (d.response ? ' ' + d.response.code : '') +
                   (d.error ? ': ' + d.error.message : '');
      report.errors.push(what);
      if (d.fatal) report.fatal = what;
    });
    hls.on(Hls.Events.FRAG_LOADED, (_e, d) => {
      if (d.part) report.partsLoaded++; else report.fragmentsLoaded++;
    });
    hls.loadSource(${JSON.stringify(url)});
    hls.attachMedia(video);
    hls.on(Hls.Events.MANIFEST_PARSED, () => { video.play().catch(e => report.errors.push('play: ' + e.message)); });
  }
  window.sample = (record) => {
    const q = video.getVideoPlaybackQuality();
    const h = window.hls;
    if (record && h && h.latency > 0) report.latency.hls.push(h.latency);
    if (record && h && h.playingDate) report.latency.wall.push((Date.now() - h.playingDate.getTime()) / 1000);
    return Object.assign({}, report, { frames: q.totalVideoFrames, droppedFrames: q.droppedVideoFrames,
                                       currentTime: video.currentTime,
                                       audioDecodedBytes: video.webkitAudioDecodedByteCount ?? null,
                                       errors: report.errors.slice(), t: performance.now() });
  };
</script>`;

const server = createServer((req, res) => {
  if (req.url === '/') {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end(page);
  } else if (req.url === '/favicon.ico') {
    res.writeHead(204);
    res.end();
  } else if (req.url === '/hls.js') {
    res.writeHead(200, { 'content-type': 'text/javascript' });
    res.end(hlsJs);
  } else {
    res.writeHead(404);
    res.end();
  }
});
await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
const pageUrl = `http://127.0.0.1:${server.address().port}/`;

const profile = mkdtempSync(join(tmpdir(), 'rtspgate-chromium-'));
let context = null;
let result = { ok: false };
const deadline = Date.now() + opts.timeout * 1000;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    ignoreHTTPSErrors: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--autoplay-policy=no-user-gesture-required',
    ],
  });
  const tab = context.pages()[0] ?? await context.newPage();
  tab.on('console', (m) => { if (m.type() === 'error') console.error(`page: ${m.text()}`); });
  await tab.goto(pageUrl);
  let s = await tab.evaluate(() => window.sample(false));
  let win0 = null;
  let win1 = null;
  const stalls = (x) => x.waiting + x.errors.filter((e) => /Stall/.test(e)).length;
  while (!s.fatal && Date.now() < deadline) {
    if (!win0 && s.frames > 0) win0 = s;
    if (win0 && !win1 && s.t - win0.t >= opts.window * 1000) win1 = s;
    if (s.frames >= opts.frames && (win1 || opts.window === 0)) break;
    await new Promise((ok) => setTimeout(ok, 100));
    s = await tab.evaluate(() => window.sample(false));
  }
  const windowReport = win0 && win1 ? {
    seconds: (win1.t - win0.t) / 1000,
    frames: win1.frames - win0.frames,
    dropped: win1.droppedFrames - win0.droppedFrames,
    currentTimeAdvance: win1.currentTime - win0.currentTime,
    rate: (win1.currentTime - win0.currentTime) / ((win1.t - win0.t) / 1000),
    stalls: stalls(win1) - stalls(win0),
    audioDecodedBytes: (win1.audioDecodedBytes ?? 0) - (win0.audioDecodedBytes ?? 0),
    errors: win1.errors.slice(win0.errors.length),
  } : null;
  const settleUntil = Math.min(Date.now() + opts.seconds * 1000, deadline);
  while (!s.fatal && Date.now() < settleUntil) {
    await new Promise((ok) => setTimeout(ok, 500));
    s = await tab.evaluate(() => window.sample(true));
  }
  result = Object.assign(s, { ok: s.frames >= opts.frames && !s.fatal, window: windowReport });
} catch (e) {
  result.error = String(e && e.message || e);
} finally {
  if (context) await context.close().catch(() => {});
  server.close();
  rmSync(profile, { recursive: true, force: true });
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
