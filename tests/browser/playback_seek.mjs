// Plays a recording's playback URL in a <video> of headless Chromium, seeks
// to the middle and checks that it plays from there; prints one line of JSON.
//
//   node tests/browser/playback_seek.mjs URL [--viewer PAGE] [--timeout S]
//
// URL is http://127.0.0.1:PORT/<path>/playback?start=...&duration=...
// The page is the URL's origin (the gateway's index page: about:blank can't
// load http media) with one <video src=URL muted> added; Chromium fetches the
// MP4 itself, with Range requests as it needs them.
// Output: { ok, duration, seekTo, seekedAt, framesBeforeSeek, framesAfter,
//   currentTimeAfter, ranges: [{ range, status, contentRange }], error? }
// With --viewer (the path's viewer page, http://127.0.0.1:PORT/<path>/), it
// then opens the page, clicks the first file of its recordings timeline and
// reports viewer: { segments, frames } (frames the playback <video> decoded).
// Exit status 0 when the seek landed and frames advanced after it (and the
// timeline's video played, with --viewer), 1 otherwise, 2 on bad usage.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const args = process.argv.slice(2);
let url = null;
let viewer = null;
let timeout = 40;
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--timeout') timeout = Number(args[++i]);
  else if (args[i] === '--viewer') viewer = args[++i];
  else if (url === null) url = args[i];
  else { console.error(`unexpected argument ${args[i]}`); process.exit(2); }
}
if (!url || !/^http:\/\/127\.0\.0\.1:\d+\//.test(url)) {
  console.error('usage: node playback_seek.mjs http://127.0.0.1:PORT/<path>/playback?... [--timeout S]');
  process.exit(2);
}

const profile = mkdtempSync(join(tmpdir(), 'rtspgate-chromium-'));
let context = null;
let result = { ok: false, ranges: [] };
const timer = setTimeout(() => {
  result.error = 'timed out';
  console.log(JSON.stringify(result));
  process.exit(1);
}, timeout * 1000);
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--autoplay-policy=no-user-gesture-required',
    ],
  });
  const tab = context.pages()[0] ?? await context.newPage();
  tab.on('response', async (r) => {
    if (!r.url().includes('/playback')) return;
    const req = r.request();
    const range = (await req.allHeaders())['range'] ?? null;
    result.ranges.push({ range, status: r.status(), contentRange: r.headers()['content-range'] ?? null });
  });
  await tab.goto(new URL(url).origin + '/');
  const seen = await tab.evaluate(async (src) => {
    const wait = (el, ev, ms) => new Promise((ok, no) => {
      const t = setTimeout(() => no(new Error(`no ${ev} within ${ms} ms`)), ms);
      el.addEventListener(ev, () => { clearTimeout(t); ok(); }, { once: true });
      el.addEventListener('error', () => { clearTimeout(t); no(new Error(`media error ${el.error && el.error.code}: ${el.error && el.error.message}`)); }, { once: true });
    });
    const v = document.createElement('video');
    v.muted = true;
    v.preload = 'auto';
    document.body.appendChild(v);
    v.src = src;
    await wait(v, 'loadedmetadata', 15000);
    const duration = v.duration;
    const frames = () => v.getVideoPlaybackQuality().totalVideoFrames;
    const framesBeforeSeek = frames();
    const seekTo = duration / 2;
    const seeked = wait(v, 'seeked', 15000);
    v.currentTime = seekTo;
    await seeked;
    const seekedAt = v.currentTime;
    const f0 = frames();
    await v.play();
    await new Promise((ok) => setTimeout(ok, 3000));
    return { duration, seekTo, seekedAt, framesBeforeSeek, framesAtSeek: f0, framesAfter: frames(), currentTimeAfter: v.currentTime };
  }, url);
  Object.assign(result, seen);
  result.ok = Math.abs(seen.seekedAt - seen.seekTo) < 2
    && seen.framesAfter > seen.framesAtSeek + 25
    && seen.currentTimeAfter > seen.seekTo + 1;
  if (viewer) {
    await tab.goto(viewer);
    await tab.waitForSelector('#recordings .segment', { timeout: 15000 });
    const segments = await tab.locator('#recordings .segment').count();
    await tab.locator('#recordings .segment').first().click();
    await tab.waitForFunction(() => {
      const v = document.querySelector('#recordings video');
      return v && v.getVideoPlaybackQuality().totalVideoFrames > 25;
    }, null, { timeout: 15000 });
    const frames = await tab.evaluate(() =>
      document.querySelector('#recordings video').getVideoPlaybackQuality().totalVideoFrames);
    result.viewer = { segments, frames };
  }
} catch (e) {
  result.error = String(e && e.message || e);
} finally {
  clearTimeout(timer);
  if (context) await context.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
