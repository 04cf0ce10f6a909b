// Headless Chromium as a WHEP viewer, for rtspgate's end-to-end tests and
// benchmark.
//
//   node whep_play.mjs --page http://127.0.0.1:H/api/v1/streams \
//     --url http://127.0.0.1:H/cam/whep [--url ...] [--viewers N] \
//     [--seconds S] [--window W] [--delete | --vanish] [--timeout S]
//     [--auth USER:PASS]
//
// Opens one page on the gateway's origin (same-origin WHEP requests), and
// for every --url starts N RTCPeerConnections (recvonly video + audio),
// each POSTing its offer once ICE gathering is complete (no trickle). After
// --seconds of playback it reads getStats(), optionally DELETEs each
// session, and prints one JSON object on stdout:
//   {"ok": true, "viewers": [{url, status, location, postMs, firstFrameMs,
//     framesDecoded, keyFramesDecoded, frameWidth, frameHeight, videoCodec,
//     audioCodec, audioPackets, audioSamples, deleteStatus, error}], ...}
// firstFrameMs is measured from sending the POST to the first decoded
// video frame (requestVideoFrameCallback, else framesDecoded polling).
// `window` measures a fixed W seconds (default 4) starting at each viewer's
// first decoded frame, so a slow start cannot hide a stall later:
//   window: {seconds, frames (decoded), dropped (framesDropped), freezes
//     (freezeCount), packetsLost, audioSamples, currentTimeAdvance (the
//     video element's currentTime over the window), rate (advance/seconds,
//     about 1 when playing in real time), waiting (the element's "waiting"
//     events: playback stalled for want of data)}
// Playback lasts until --seconds have passed and every viewer's window is
// over.
// --vanish leaves the peer connections open and exits at once, which kills
// Chromium without a DTLS close_notify or RTCP BYE: a viewer that vanished.
// --auth sends `Authorization: Basic` with the POST and the DELETE.
// HTTPS certificates are not checked (the gateway's may be self-signed).
// Exits 2 on a usage error, 3 on the hard timeout.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

function parseArgs(argv) {
  const a = { urls: [], viewers: 1, seconds: 6, window: 4, del: false, vanish: false, timeout: 90, page: null, auth: null };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    const v = () => {
      if (i + 1 >= argv.length) usage(`${k} needs a value`);
      return argv[++i];
    };
    if (k === '--url') a.urls.push(v());
    else if (k === '--page') a.page = v();
    else if (k === '--viewers') a.viewers = Number(v());
    else if (k === '--seconds') a.seconds = Number(v());
    else if (k === '--window') a.window = Number(v());
    else if (k === '--timeout') a.timeout = Number(v());
    else if (k === '--auth') a.auth = v();
    else if (k === '--delete') a.del = true;
    else if (k === '--vanish') a.vanish = true;
    else usage(`unknown argument ${k}`);
  }
  if (!a.urls.length || !a.page) usage('need --page and at least one --url');
  return a;
}

function usage(msg) {
  console.error(`whep_play.mjs: ${msg}`);
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
      '--autoplay-policy=no-user-gesture-required',
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
    async ({ urls, viewers, seconds, window, del, vanish, auth }) => {
      const authHeaders = auth ? { Authorization: 'Basic ' + btoa(auth) } : {};
      const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

      async function gatheringComplete(pc, ms) {
        if (pc.iceGatheringState === 'complete') return;
        await Promise.race([
          new Promise((r) =>
            pc.addEventListener('icegatheringstatechange', () => {
              if (pc.iceGatheringState === 'complete') r();
            }),
          ),
          sleep(ms),
        ]);
      }

      async function start(url) {
        const v = { url, status: null, location: null, error: null };
        const pc = new RTCPeerConnection({ iceServers: [] });
        pc.addTransceiver('video', { direction: 'recvonly' });
        pc.addTransceiver('audio', { direction: 'recvonly' });
        const video = document.createElement('video');
        v.waiting = 0;
        video.addEventListener('waiting', () => {
          if (v.win0) v.waiting++;
        });
        video.muted = true;
        video.autoplay = true;
        video.playsInline = true;
        document.body.appendChild(video);
        const ms = new MediaStream();
        pc.ontrack = (e) => {
          ms.addTrack(e.track);
          video.srcObject = ms;
          video.play().catch(() => {});
        };
        v.pc = pc;
        v.video = video;
        try {
          await pc.setLocalDescription(await pc.createOffer());
          await gatheringComplete(pc, 3000);
          const t0 = performance.now();
          v.t0 = t0;
          v.delays = [];
          if ('requestVideoFrameCallback' in video) {
            // Per presented frame: packet receipt to expected display (ms).
            const onFrame = (now, meta) => {
              if (v.firstFrameMs == null) v.firstFrameMs = performance.now() - t0;
              if (meta.receiveTime != null && meta.expectedDisplayTime != null) {
                v.delays.push([performance.now() - t0, meta.expectedDisplayTime - meta.receiveTime]);
              }
              video.requestVideoFrameCallback(onFrame);
            };
            video.requestVideoFrameCallback(onFrame);
          }
          const resp = await fetch(url, {
            method: 'POST',
            headers: { 'Content-Type': 'application/sdp', ...authHeaders },
            body: pc.localDescription.sdp,
          });
          v.status = resp.status;
          v.postMs = performance.now() - t0;
          v.location = resp.headers.get('Location');
          v.etag = resp.headers.get('ETag');
          const text = await resp.text();
          if (resp.status !== 201) {
            v.error = `POST ${url}: ${resp.status} ${text.trim()}`;
            return v;
          }
          v.answerNotes = text
            .split('\r\n')
            .filter((l) => l.startsWith('a=rtspgate-info:'))
            .map((l) => l.slice('a=rtspgate-info:'.length));
          await pc.setRemoteDescription({ type: 'answer', sdp: text });
        } catch (e) {
          v.error = `${e}`;
        }
        return v;
      }

      async function stats(v) {
        const out = { framesDecoded: 0, audioPackets: 0, audioSamples: 0 };
        const report = await v.pc.getStats();
        const codecs = {};
        report.forEach((s) => {
          if (s.type === 'codec') codecs[s.id] = s.mimeType;
        });
        report.forEach((s) => {
          if (s.type !== 'inbound-rtp') return;
          if (s.kind === 'video') {
            out.framesDecoded = s.framesDecoded ?? 0;
            out.keyFramesDecoded = s.keyFramesDecoded ?? 0;
            out.framesReceived = s.framesReceived ?? 0;
            out.frameWidth = s.frameWidth ?? null;
            out.frameHeight = s.frameHeight ?? null;
            out.videoPackets = s.packetsReceived ?? 0;
            out.videoPacketsLost = s.packetsLost ?? 0;
            out.nackCount = s.nackCount ?? 0;
            out.pliCount = s.pliCount ?? 0;
            out.jitterBufferDelayMs =
              s.jitterBufferEmittedCount > 0
                ? (1000 * s.jitterBufferDelay) / s.jitterBufferEmittedCount
                : null;
            out.videoCodec = codecs[s.codecId] ?? null;
            out.framesDropped = s.framesDropped ?? 0;
            out.freezeCount = s.freezeCount ?? 0;
          } else if (s.kind === 'audio') {
            out.audioPacketsLost = s.packetsLost ?? 0;
            out.audioPackets = s.packetsReceived ?? 0;
            out.audioSamples = s.totalSamplesReceived ?? 0;
            out.concealedSamples = s.concealedSamples ?? 0;
            out.audioCodec = codecs[s.codecId] ?? null;
            out.audioLevel = s.audioLevel ?? null;
          }
        });
        return out;
      }

      const all = [];
      for (const url of urls) for (let i = 0; i < viewers; i++) all.push(start(url));
      const vs = await Promise.all(all);

      // Poll framesDecoded for the first frame (fallback to rVFC timing);
      // the measurement window starts there.
      const snapshot = async (v) => {
        const s = await stats(v);
        return {
          t: performance.now(),
          frames: s.framesDecoded,
          dropped: s.framesDropped ?? 0,
          freezes: s.freezeCount ?? 0,
          lost: (s.videoPacketsLost ?? 0) + (s.audioPacketsLost ?? 0),
          audioSamples: s.audioSamples ?? 0,
          currentTime: v.video.currentTime,
        };
      };
      const end = performance.now() + seconds * 1000;
      // Viewers whose first frame never comes stop the wait at `end` plus
      // one window.
      const lastEnd = end + window * 1000;
      for (;;) {
        const now = performance.now();
        let pending = false;
        for (const v of vs) {
          if (v.status !== 201) continue;
          if (!v.win0) {
            const s = await snapshot(v);
            if (s.frames > 0) {
              v.firstFrameMsStats = s.t - v.t0;
              v.win0 = s;
            }
            pending = true;
          } else if (!v.win1) {
            if (now - v.win0.t >= window * 1000) v.win1 = await snapshot(v);
            else pending = true;
          }
        }
        if (now >= lastEnd || (now >= end && !pending)) break;
        await sleep(20);
      }
      const windowOf = (v) => {
        if (!v.win0 || !v.win1) return null;
        const [a, b] = [v.win0, v.win1];
        const secs = (b.t - a.t) / 1000;
        const advance = b.currentTime - a.currentTime;
        return {
          seconds: secs,
          frames: b.frames - a.frames,
          dropped: b.dropped - a.dropped,
          freezes: b.freezes - a.freezes,
          packetsLost: b.lost - a.lost,
          audioSamples: b.audioSamples - a.audioSamples,
          currentTimeAdvance: advance,
          rate: secs > 0 ? advance / secs : 0,
          waiting: v.waiting,
        };
      };

      const out = [];
      for (const v of vs) {
        const row = {
          url: v.url,
          status: v.status,
          location: v.location,
          etag: v.etag ?? null,
          postMs: v.postMs ?? null,
          firstFrameMs: v.firstFrameMs ?? v.firstFrameMsStats ?? null,
          firstFrameMsStats: v.firstFrameMsStats ?? null,
          // Median receipt→display delay of frames presented 2 s or more
          // after the POST (after any start-up burst).
          receiveToDisplayMs: (() => {
            const d = (v.delays ?? []).filter(([t]) => t >= 2000).map(([, x]) => x).sort((a, b) => a - b);
            return d.length ? d[Math.floor(d.length / 2)] : null;
          })(),
          presentedFrames: (v.delays ?? []).length,
          window: windowOf(v),
          answerNotes: v.answerNotes ?? [],
          connectionState: v.pc.connectionState,
          error: v.error,
        };
        if (v.status === 201) Object.assign(row, await stats(v));
        if (del && v.location) {
          const r = await fetch(v.location, { method: 'DELETE', headers: authHeaders });
          row.deleteStatus = r.status;
        }
        if (!vanish) v.pc.close();
        out.push(row);
      }
      return out;
    },
    {
      urls: args.urls,
      viewers: args.viewers,
      seconds: args.seconds,
      window: args.window,
      del: args.del,
      vanish: args.vanish,
      auth: args.auth,
    },
  );

  console.log(
    JSON.stringify({
      ok: result.every((v) => !v.error),
      viewers: result,
      console: consoleLines.slice(-50),
      chromium: context.browser()?.version() ?? null,
    }),
  );
  if (args.vanish) {
    // Playwright's exit hook SIGKILLs Chromium: no goodbye reaches the gateway.
    rmSync(profile, { recursive: true, force: true });
    process.exit(0);
  }
} catch (e) {
  console.log(JSON.stringify({ ok: false, error: `${e?.stack ?? e}` }));
  process.exitCode = 1;
} finally {
  clearTimeout(hardTimer);
  if (context) await context.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
}
