// Headless Chromium as a WHIP publisher (RFC 9725), for rtspgate's
// end-to-end tests: its fake camera and microphone
// (--use-fake-device-for-media-stream) go out over one RTCPeerConnection.
//
//   node whip_publish.mjs --page http://127.0.0.1:H/web/style.css \
//     --url http://127.0.0.1:H/live/whip [--auth USER:PASS] [--seconds S] \
//     [--timeout S] [--codec h264|vp8]
//
// Opens one page on the gateway's origin (a secure context on 127.0.0.1, so
// getUserMedia works), asks for 640x480 video at 25 fps and audio, adds
// both as sendonly transceivers with --codec preferred (default h264), and
// POSTs the offer once ICE gathering is complete (no trickle). When the
// answer is 201 it publishes for --seconds after the connection is up, then
// DELETEs the session resource and prints one JSON object on stdout:
//   {"ok": true, "status": 201, "location", "etag", "connectedMs",
//    "connectionState", "deleteStatus", "seconds" (published),
//    "video": {codec, framesEncoded, framesSent, frameWidth, frameHeight,
//              packetsSent, fps (framesSent per published second),
//              pliCount, nackCount, qualityLimitationReason},
//    "audio": {codec, packetsSent}, "error"}
// A refused POST (status other than 201) ends at once with ok: true and the
// status and body text in "error" (the tests check refusals).
// --auth sends `Authorization: Basic` with the POST and the DELETE.
// Exits 2 on a usage error, 3 on the hard timeout.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

function parseArgs(argv) {
  const a = { url: null, page: null, auth: null, seconds: 10, timeout: 90, codec: 'h264' };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    const v = () => {
      if (i + 1 >= argv.length) usage(`${k} needs a value`);
      return argv[++i];
    };
    if (k === '--url') a.url = v();
    else if (k === '--page') a.page = v();
    else if (k === '--auth') a.auth = v();
    else if (k === '--seconds') a.seconds = Number(v());
    else if (k === '--timeout') a.timeout = Number(v());
    else if (k === '--codec') a.codec = v();
    else usage(`unknown argument ${k}`);
  }
  if (!a.url || !a.page) usage('need --page and --url');
  return a;
}

function usage(msg) {
  console.error(`whip_publish.mjs: ${msg}`);
  process.exit(2);
}

const args = parseArgs(process.argv.slice(2));
const hardTimer = setTimeout(() => {
  console.log(JSON.stringify({ ok: false, error: `hard timeout after ${args.timeout} s` }));
  process.exit(3);
}, args.timeout * 1000);

const profile = mkdtempSync(join(tmpdir(), 'rtspgate-chromium-'));
let context;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    ignoreHTTPSErrors: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--use-fake-device-for-media-stream',
      '--use-fake-ui-for-media-stream',
      '--allow-loopback-in-peer-connection',
      '--disable-features=WebRtcHideLocalIpsWithMdns',
    ],
  });
  const page = context.pages()[0] ?? (await context.newPage());
  const consoleLines = [];
  page.on('console', (m) => consoleLines.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => consoleLines.push(`pageerror: ${e.message}`));
  await page.goto(args.page);

  const result = await page.evaluate(
    async ({ url, auth, seconds, codec }) => {
      const authHeaders = auth ? { Authorization: 'Basic ' + btoa(auth) } : {};
      const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
      const out = { status: null, error: null };
      const media = await navigator.mediaDevices.getUserMedia({
        video: { width: 640, height: 480, frameRate: 25 },
        audio: true,
      });
      const pc = new RTCPeerConnection({ iceServers: [] });
      for (const track of media.getTracks()) {
        const t = pc.addTransceiver(track, { direction: 'sendonly', streams: [media] });
        if (track.kind === 'video') {
          const want = `video/${codec}`.toLowerCase();
          const all = RTCRtpSender.getCapabilities('video').codecs;
          const first = all.filter((c) => c.mimeType.toLowerCase() === want);
          t.setCodecPreferences([...first, ...all.filter((c) => !first.includes(c))]);
          const p = t.sender.getParameters();
          p.degradationPreference = 'maintain-framerate';
          await t.sender.setParameters(p).catch(() => {});
        }
      }
      await pc.setLocalDescription(await pc.createOffer());
      if (pc.iceGatheringState !== 'complete') {
        await Promise.race([
          new Promise((r) =>
            pc.addEventListener('icegatheringstatechange', () => {
              if (pc.iceGatheringState === 'complete') r();
            }),
          ),
          sleep(3000),
        ]);
      }
      const t0 = performance.now();
      // credentials 'omit': a 401 with a Basic challenge must come back to
      // the page, not open Chromium's login prompt (which never answers).
      const resp = await fetch(url, {
        method: 'POST',
        credentials: 'omit',
        headers: { 'Content-Type': 'application/sdp', ...authHeaders },
        body: pc.localDescription.sdp,
      });
      out.status = resp.status;
      out.location = resp.headers.get('Location');
      out.etag = resp.headers.get('ETag');
      const text = await resp.text();
      if (resp.status !== 201) {
        out.error = `POST ${url}: ${resp.status} ${text.trim()}`;
        pc.close();
        media.getTracks().forEach((t) => t.stop());
        return out;
      }
      out.answerNotes = text
        .split('\r\n')
        .filter((l) => l.startsWith('a=rtspgate-info:'))
        .map((l) => l.slice('a=rtspgate-info:'.length));
      await pc.setRemoteDescription({ type: 'answer', sdp: text });
      const connectBy = performance.now() + 10000;
      while (pc.connectionState !== 'connected' && performance.now() < connectBy) {
        if (pc.connectionState === 'failed') break;
        await sleep(20);
      }
      out.connectionState = pc.connectionState;
      if (pc.connectionState !== 'connected') {
        out.error = `not connected: ${pc.connectionState}`;
      } else {
        out.connectedMs = performance.now() - t0;
        const start = performance.now();
        await sleep(seconds * 1000);
        out.seconds = (performance.now() - start) / 1000;
      }
      const report = await pc.getStats();
      const codecs = {};
      report.forEach((s) => {
        if (s.type === 'codec') codecs[s.id] = s.mimeType;
      });
      report.forEach((s) => {
        if (s.type !== 'outbound-rtp') return;
        if (s.kind === 'video') {
          out.video = {
            codec: codecs[s.codecId] ?? null,
            framesEncoded: s.framesEncoded ?? 0,
            framesSent: s.framesSent ?? 0,
            frameWidth: s.frameWidth ?? null,
            frameHeight: s.frameHeight ?? null,
            packetsSent: s.packetsSent ?? 0,
            pliCount: s.pliCount ?? 0,
            nackCount: s.nackCount ?? 0,
            qualityLimitationReason: s.qualityLimitationReason ?? null,
            fps: out.seconds ? (s.framesSent ?? 0) / out.seconds : 0,
          };
        } else if (s.kind === 'audio') {
          out.audio = { codec: codecs[s.codecId] ?? null, packetsSent: s.packetsSent ?? 0 };
        }
      });
      if (out.location) {
        const r = await fetch(out.location, {
          method: 'DELETE',
          credentials: 'omit',
          headers: authHeaders,
        });
        out.deleteStatus = r.status;
      }
      out.finalState = pc.connectionState;
      pc.close();
      media.getTracks().forEach((t) => t.stop());
      return out;
    },
    { url: args.url, auth: args.auth, seconds: args.seconds, codec: args.codec },
  );

  const refused = result.status !== 201;
  console.log(
    JSON.stringify({
      ok: refused || !result.error,
      ...result,
      console: consoleLines.slice(-50),
      chromium: context.browser()?.version() ?? null,
    }),
  );
} catch (e) {
  console.log(JSON.stringify({ ok: false, error: `${e?.stack ?? e}` }));
  process.exitCode = 1;
} finally {
  clearTimeout(hardTimer);
  if (context) await context.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
}
