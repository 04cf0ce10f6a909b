// Drives rtspgate's own viewer page in headless Chromium and prints one line
// of JSON with what a person would have seen.
//
//   node tests/browser/viewer_page.mjs BASE PATH [--frames N] [--timeout S]
//        [--window W] [--watch S] [--block-webrtc] [--screenshot FILE]
//        [--auth USER:PASS] [--no-index]
//
// BASE is the gateway's HTTP root (http(s)://127.0.0.1:PORT; HTTPS
// certificates are not checked). With --auth the browser answers the
// gateway's 401 (Basic) with USER:PASS, as a person would in its login
// dialog; --no-index skips the index (which needs the `api` permission). The script opens
// BASE/ (the index) and records the stream names its tiles show, then opens
// BASE/PATH/ (the player) and waits until the player has decoded N frames
// (default 100) and a fixed window of W seconds (default 4) after the first
// decoded frame is over: window { seconds, frames, dropped, currentTimeAdvance,
// rate (about 1 in real time), waiting (the video's "waiting" events) }.
// Then with --watch S samples { at (Date.now()), frames, transport, message }
// once a second for S more seconds into `timeline`. With --block-webrtc every WHEP request is aborted by the
// browser, so the page must fall back to LL-HLS by itself.
// Output: { ok, index: [names], posters: [tile poster URLs], poster: { status,
//           type, bytes } (the first poster fetched), transport, frames, width, height, overlay,
//           message, lumaStdDev (spread of the frame's luma: 0 = blank), error? }; exit 0 when ok, 1 otherwise, 2 on bad usage.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

function usage(msg) {
  console.error(`viewer_page.mjs: ${msg}\nusage: node viewer_page.mjs BASE PATH [--frames N] [--timeout S] [--block-webrtc] [--screenshot FILE]`);
  process.exit(2);
}

const args = process.argv.slice(2);
const opts = { frames: 100, timeout: 40, window: 4, watch: 0, blockWebrtc: false, screenshot: null, auth: null, index: true };
const pos = [];
for (let i = 0; i < args.length; i++) {
  const a = args[i];
  if (a === '--block-webrtc') opts.blockWebrtc = true;
  else if (a === '--screenshot') opts.screenshot = args[++i];
  else if (a === '--auth') opts.auth = args[++i];
  else if (a === '--no-index') opts.index = false;
  else if (a === '--frames' || a === '--timeout' || a === '--watch' || a === '--window') {
    const v = Number(args[++i]);
    if (!Number.isFinite(v) || v <= 0) usage(`${a} needs a positive number`);
    opts[a.slice(2)] = v;
  } else if (a.startsWith('--')) usage(`unknown option ${a}`);
  else pos.push(a);
}
if (pos.length !== 2) usage('BASE and PATH are required');
const [base, path] = pos;
if (!/^https?:\/\/127\.0\.0\.1:\d+$/.test(base)) usage('BASE must be http(s)://127.0.0.1:PORT');
const [authUser, ...authPass] = (opts.auth ?? '').split(':');

const out = { ok: false, index: [], transport: null, frames: 0, width: 0, height: 0, overlay: '', message: '' };
const profile = mkdtempSync(join(tmpdir(), 'rtspgate-viewer-'));
let context;
const deadline = Date.now() + opts.timeout * 1000;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    ignoreHTTPSErrors: true,
    ...(opts.auth ? { httpCredentials: { username: authUser, password: authPass.join(':') } } : {}),
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--autoplay-policy=no-user-gesture-required', '--allow-loopback-in-peer-connection',
      '--disable-features=WebRtcHideLocalIpsWithMdns',
    ],
  });
  const page = context.pages()[0] || await context.newPage();
  if (opts.blockWebrtc) await page.route('**/whep**', (route) => route.abort());

  if (opts.index) {
    await page.goto(`${base}/`);
    await page.waitForSelector('.tile h2 a', { timeout: 10000 });
    out.index = await page.$$eval('.tile h2 a', (as) => as.map((a) => a.textContent));
    // A tile not playing yet shows its stream's snapshot as the poster.
    out.posters = await page.$$eval('.tile video', (vs) => vs.map((v) => v.poster));
    if (out.posters[0]) {
      out.poster = await page.evaluate(async (url) => {
        const r = await fetch(url);
        const b = await r.arrayBuffer();
        return { status: r.status, type: r.headers.get('content-type'), bytes: b.byteLength };
      }, out.posters[0]);
    }
  }

  await page.goto(`${base}/${encodeURIComponent(path)}/`);
  await page.evaluate(() => {
    window.waitingEvents = 0;
    const hook = () => {
      const v = document.querySelector('video');
      if (v) v.addEventListener('waiting', () => { window.waitingEvents++; });
      else setTimeout(hook, 20);
    };
    hook();
  });
  let win0 = null;
  let win1 = null;
  for (;;) {
    const st = await page.evaluate(() => {
      const v = document.querySelector('video');
      const q = v && v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality() : null;
      return {
        ...window.player.stats,
        overlay: document.querySelector('.overlay').textContent,
        message: document.querySelector('.message').textContent,
        t: performance.now(),
        currentTime: v ? v.currentTime : 0,
        dropped: q ? q.droppedVideoFrames : 0,
        waiting: window.waitingEvents,
      };
    });
    Object.assign(out, {
      transport: st.transport, frames: st.framesDecoded, width: st.width, height: st.height,
      overlay: st.overlay, message: st.message,
    });
    if (!win0 && st.framesDecoded > 0) win0 = st;
    if (win0 && !win1 && st.t - win0.t >= opts.window * 1000) win1 = st;
    if (st.framesDecoded >= opts.frames && win1) break;
    if (Date.now() > deadline) {
      throw new Error(`only ${st.framesDecoded} frames within ${opts.timeout} s` +
                      (win1 ? '' : ` (window of ${opts.window} s after the first frame not over)`));
    }
    await page.waitForTimeout(100);
  }
  out.window = {
    seconds: (win1.t - win0.t) / 1000,
    frames: win1.framesDecoded - win0.framesDecoded,
    dropped: win1.dropped - win0.dropped,
    currentTimeAdvance: win1.currentTime - win0.currentTime,
    rate: (win1.currentTime - win0.currentTime) / ((win1.t - win0.t) / 1000),
    waiting: win1.waiting - win0.waiting,
  };
  // --watch S: keep the page open S more seconds, sampling frames decoded and
  // the overlay once a second (e.g. while the camera goes away and comes back).
  out.timeline = [];
  for (let i = 0; i < opts.watch; i++) {
    await page.waitForTimeout(1000);
    out.timeline.push(await page.evaluate(() => ({
      at: Date.now(),
      frames: window.player.stats.framesDecoded,
      transport: window.player.stats.transport,
      message: document.querySelector('.message').textContent,
    })));
  }
  // Not blank: the spread of luma over the current video frame.
  out.lumaStdDev = await page.evaluate(() => {
    const v = document.querySelector('video');
    const c = document.createElement('canvas');
    c.width = 160; c.height = 90;
    const g = c.getContext('2d');
    g.drawImage(v, 0, 0, c.width, c.height);
    const d = g.getImageData(0, 0, c.width, c.height).data;
    let sum = 0, sq = 0;
    const n = d.length / 4;
    for (let i = 0; i < d.length; i += 4) {
      const y = 0.299 * d[i] + 0.587 * d[i + 1] + 0.114 * d[i + 2];
      sum += y; sq += y * y;
    }
    const mean = sum / n;
    return Math.sqrt(Math.max(0, sq / n - mean * mean));
  });
  if (opts.screenshot) await page.screenshot({ path: opts.screenshot });
  out.ok = true;
} catch (e) {
  out.error = String(e && e.message ? e.message : e);
} finally {
  if (context) await context.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
}
console.log(JSON.stringify(out));
process.exit(out.ok ? 0 : 1);
