// Headless Chromium as a viewer of a Janus streaming-plugin mountpoint, for
// examples/bench (time to first frame next to whep_play.mjs; not a test).
//
//   node janus_play.mjs --api http://10.200.0.2:8088/janus --id 1 [--seconds S]
//
// Opens a page on Janus's own origin (GET <api>/info, so the page's REST
// calls are same-origin), creates a session, attaches janus.plugin.streaming,
// sends `watch` (Janus makes the offer), answers once ICE gathering is
// complete, and sends `start` with the answer. Prints one JSON object like
// whep_play.mjs: {"ok", "viewers": [{firstFrameMs, answerMs, framesDecoded,
// frameWidth, frameHeight, error}]}. firstFrameMs counts from sending
// `watch` to the first presented frame (requestVideoFrameCallback, else
// framesDecoded polling).

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const a = { api: null, id: 1, seconds: 3, timeout: 60 };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  const k = argv[i];
  const v = () => argv[++i];
  if (k === '--api') a.api = v();
  else if (k === '--id') a.id = Number(v());
  else if (k === '--seconds') a.seconds = Number(v());
  else if (k === '--timeout') a.timeout = Number(v());
  else {
    console.error(`janus_play.mjs: unknown argument ${k}`);
    process.exit(2);
  }
}
if (!a.api) {
  console.error('janus_play.mjs: need --api');
  process.exit(2);
}
const hardTimer = setTimeout(() => {
  console.log(JSON.stringify({ ok: false, error: `hard timeout after ${a.timeout} s` }));
  process.exit(3);
}, a.timeout * 1000);

const profile = mkdtempSync(join(tmpdir(), 'rtspgate-chromium-'));
let context;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium',
    headless: true,
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
      '--disable-features=WebRtcHideLocalIpsWithMdns',
    ],
  });
  const page = context.pages()[0] ?? (await context.newPage());
  await page.goto(`${a.api}/info`);
  const row = await page.evaluate(
    async ({ api, id, seconds }) => {
      const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
      const v = { error: null };
      let tx = 0;
      const post = async (path, body) => {
        body.transaction = `t${++tx}`;
        const r = await fetch(api + path, { method: 'POST', body: JSON.stringify(body) });
        const j = await r.json();
        if (j.janus === 'error') throw new Error(`janus: ${JSON.stringify(j.error)}`);
        return j;
      };
      let session = null;
      try {
        session = (await post('', { janus: 'create' })).data.id;
        const handle = (await post(`/${session}`, { janus: 'attach', plugin: 'janus.plugin.streaming' })).data.id;
        const pc = new RTCPeerConnection({ iceServers: [] });
        const video = document.createElement('video');
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
        const t0 = performance.now();
        if ('requestVideoFrameCallback' in video) {
          video.requestVideoFrameCallback(() => {
            if (v.firstFrameMs == null) v.firstFrameMs = performance.now() - t0;
          });
        }
        await post(`/${session}/${handle}`, { janus: 'message', body: { request: 'watch', id } });
        let offer = null;
        while (!offer && performance.now() - t0 < 20000) {
          const ev = await (await fetch(`${api}/${session}?maxev=1`)).json();
          if (ev.jsep && ev.jsep.type === 'offer') offer = ev.jsep;
          else if (ev.plugindata?.data?.error) throw new Error(ev.plugindata.data.error);
        }
        if (!offer) throw new Error('no offer from janus');
        await pc.setRemoteDescription(offer);
        await pc.setLocalDescription(await pc.createAnswer());
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
        await post(`/${session}/${handle}`, {
          janus: 'message',
          body: { request: 'start' },
          jsep: { type: 'answer', sdp: pc.localDescription.sdp },
        });
        v.answerMs = performance.now() - t0;
        const end = performance.now() + seconds * 1000;
        while (performance.now() < end) {
          const report = await pc.getStats();
          report.forEach((s) => {
            if (s.type === 'inbound-rtp' && s.kind === 'video') {
              v.framesDecoded = s.framesDecoded ?? 0;
              v.frameWidth = s.frameWidth ?? null;
              v.frameHeight = s.frameHeight ?? null;
              if (v.framesDecoded > 0 && v.firstFrameMsStats == null) v.firstFrameMsStats = performance.now() - t0;
            }
          });
          await sleep(20);
        }
        if (v.firstFrameMs == null) v.firstFrameMs = v.firstFrameMsStats ?? null;
        pc.close();
      } catch (e) {
        v.error = `${e}`;
      }
      if (session) await post(`/${session}`, { janus: 'destroy' }).catch(() => {});
      return v;
    },
    { api: a.api, id: a.id, seconds: a.seconds },
  );
  console.log(JSON.stringify({ ok: !row.error, viewers: [row] }));
} catch (e) {
  console.log(JSON.stringify({ ok: false, error: `${e?.stack ?? e}` }));
  process.exitCode = 1;
} finally {
  clearTimeout(hardTimer);
  if (context) await context.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
}
