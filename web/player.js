// rtspgate's player: WebRTC through WHEP first (sub-second), LL-HLS through
// hls.js (or the browser's own HLS) when WebRTC fails or the stream's codecs
// can't go over WebRTC; an MJPEG camera (which neither carries) as an <img>
// of /<path>/mjpeg (multipart/x-mixed-replace). Reconnects by itself when
// the stream comes back.
// Nothing is fetched from outside the gateway.
'use strict';

class RtspgatePlayer {
  constructor(container, path, opts = {}) {
    this.box = container;
    this.video = container.querySelector('video');
    this.overlay = container.querySelector('.overlay');
    this.message = container.querySelector('.message');
    this.path = path;
    this.opts = opts;
    this.base = `/${encodeURIComponent(path)}`;
    this.transport = 'none';
    this.stream = null;       // last /api/v1/streams/<path> answer
    this.reason = '';         // why the current transport was chosen
    this.stats = { transport: 'none', framesDecoded: 0, width: 0, height: 0, fps: 0, kbps: 0, latency: null };
    this.stopped = false;
    this.session = null;      // { pc, location } for WebRTC; { hls } for HLS; { img } for MJPEG
    this.lastBytes = null;
    this.lastFrames = null;
    this.generation = 0;
  }

  start() {
    this.stopped = false;
    this.connect();
    this.statTimer = setInterval(() => this.updateStats(), 1000);
    this.infoTimer = setInterval(() => this.fetchInfo(), 2000);
    window.addEventListener('pagehide', () => this.teardown());
  }

  stop() {
    this.stopped = true;
    clearInterval(this.statTimer);
    clearInterval(this.infoTimer);
    this.teardown();
  }

  async fetchInfo() {
    try {
      const r = await fetch(`/api/v1/streams/${encodeURIComponent(this.path)}`, { cache: 'no-store' });
      this.stream = r.ok ? await r.json() : { state: 'failed', error: `no stream named ${this.path}` };
    } catch (e) {
      this.stream = { state: 'unreachable', error: 'the gateway does not answer' };
    }
    return this.stream;
  }

  setMessage(text) { this.message.textContent = text || ''; }

  // Plain words for the stream's state, as the API gives it.
  stateText() {
    const s = this.stream;
    if (!s) return '';
    const parts = [];
    if (s.state !== 'live') parts.push(`stream ${s.state}${s.error ? ': ' + s.error : ''}`);
    if (s.notice) parts.push(s.notice);
    return parts.join(' · ');
  }

  async connect() {
    const gen = ++this.generation;
    this.teardown();
    if (this.stopped) return;
    const info = await this.fetchInfo();
    if (gen !== this.generation || this.stopped) return;
    if (info.state !== 'live') {
      this.setMessage(this.stateText() || 'waiting for the stream');
      this.retry(gen, 2000);
      return;
    }
    // Video only as MJPEG: WebRTC and HLS don't carry it (the API says so).
    const tracks = info.tracks || [];
    const mjpegOnly = info.urls && info.urls.mjpeg
      && !tracks.some((t) => t.kind === 'video' && t.codec !== 'mjpeg');
    if (mjpegOnly) {
      this.startMJPEG(gen, info.urls.mjpeg);
      return;
    }
    if (this.opts.prefer !== 'hls') {
      try {
        await this.startWebRTC(gen);
        return;
      } catch (e) {
        if (gen !== this.generation) return;
        this.reason = `WebRTC failed (${e.message}); using LL-HLS`;
        console.warn('rtspgate:', this.reason);
        this.teardown();
      }
    }
    try {
      await this.startHLS(gen);
    } catch (e) {
      if (gen !== this.generation) return;
      this.setMessage(`cannot play: ${e.message}. ${this.stateText()}`);
      this.retry(gen, 3000);
    }
  }

  retry(gen, ms) {
    setTimeout(() => { if (gen === this.generation && !this.stopped) this.connect(); }, ms);
  }

  teardown() {
    const s = this.session;
    this.session = null;
    this.transport = 'none';
    if (!s) return;
    if (s.pc) {
      s.pc.close();
      // WHEP: DELETE the resource so the gateway frees the session at once.
      if (s.location) fetch(s.location, { method: 'DELETE', keepalive: true }).catch(() => {});
    }
    if (s.hls) s.hls.destroy();
    if (s.img) {
      // Dropping the source ends the endless response.
      s.img.onerror = null;
      s.img.removeAttribute('src');
      s.img.remove();
      this.video.style.display = '';
    }
    this.video.removeAttribute('src');
    this.video.srcObject = null;
  }

  async startWebRTC(gen) {
    if (typeof RTCPeerConnection === 'undefined') throw new Error('this browser has no WebRTC');
    const pc = new RTCPeerConnection();
    this.session = { pc, location: null };
    pc.addTransceiver('video', { direction: 'recvonly' });
    pc.addTransceiver('audio', { direction: 'recvonly' });
    const remote = new MediaStream();
    pc.ontrack = (ev) => { remote.addTrack(ev.track); this.video.srcObject = remote; };
    await pc.setLocalDescription(await pc.createOffer());
    // Non-trickle WHEP: send the offer with its candidates.
    await new Promise((resolve) => {
      if (pc.iceGatheringState === 'complete') return resolve();
      const t = setTimeout(resolve, 2000);
      pc.addEventListener('icegatheringstatechange', () => {
        if (pc.iceGatheringState === 'complete') { clearTimeout(t); resolve(); }
      });
    });
    const r = await fetch(`${this.base}/whep`, {
      method: 'POST', headers: { 'Content-Type': 'application/sdp' }, body: pc.localDescription.sdp,
    });
    if (r.status !== 201) {
      const text = (await r.text()).trim();
      throw new Error(`WHEP answered ${r.status}${text ? ': ' + text : ''}`);
    }
    this.session.location = r.headers.get('Location');
    await pc.setRemoteDescription({ type: 'answer', sdp: await r.text() });
    // Connected and a first frame decoded within 8 s, or it's a failure.
    await new Promise((resolve, reject) => {
      const deadline = setTimeout(() => reject(new Error('no video within 8 s (UDP blocked?)')), 8000);
      const check = () => {
        if (pc.connectionState === 'failed') { clearTimeout(deadline); reject(new Error('ICE failed')); }
      };
      pc.addEventListener('connectionstatechange', check);
      const frame = () => { clearTimeout(deadline); resolve(); };
      if ('requestVideoFrameCallback' in this.video) this.video.requestVideoFrameCallback(frame);
      else this.video.addEventListener('playing', frame, { once: true });
      this.video.play().catch(() => {});
    });
    if (gen !== this.generation) return;
    this.transport = 'webrtc';
    this.reason = '';
    this.setMessage('');
    pc.addEventListener('connectionstatechange', () => {
      if (['failed', 'disconnected', 'closed'].includes(pc.connectionState) && gen === this.generation) {
        this.setMessage(`WebRTC ${pc.connectionState}; reconnecting`);
        this.retry(gen, 1000);
      }
    });
  }

  // MJPEG: the browser shows each part of the multipart response in turn.
  startMJPEG(gen, url) {
    const img = document.createElement('img');
    img.alt = `${this.path} (MJPEG)`;
    img.className = 'mjpeg';
    img.onerror = () => {
      if (gen !== this.generation) return;
      this.setMessage(`MJPEG stream ended; reconnecting. ${this.stateText()}`);
      this.retry(gen, 2000);
    };
    this.video.style.display = 'none';
    this.video.after(img);
    this.session = { img };
    img.src = url;
    this.transport = 'mjpeg';
    this.reason = '';
    this.setMessage('');
  }

  async startHLS(gen) {
    const url = `${this.base}/index.m3u8`;
    if (window.Hls && Hls.isSupported()) {
      const hls = new Hls({ lowLatencyMode: true, backBufferLength: 10 });
      this.session = { hls };
      this.hlsBytes = 0;
      hls.on(Hls.Events.FRAG_LOADED, (_, d) => { this.hlsBytes += d.frag.stats.loaded || 0; });
      hls.on(Hls.Events.ERROR, (_, d) => {
        if (d.fatal && gen === this.generation) {
          this.setMessage(`LL-HLS error: ${d.details}; reconnecting. ${this.stateText()}`);
          this.retry(gen, 2000);
        }
      });
      hls.loadSource(url);
      hls.attachMedia(this.video);
    } else if (this.video.canPlayType('application/vnd.apple.mpegurl')) {
      this.session = { native: true };
      this.video.src = url; // Safari: native LL-HLS
    } else {
      throw new Error('this browser plays neither WebRTC nor HLS');
    }
    this.video.play().catch(() => {});
    this.transport = 'll-hls';
    this.setMessage(this.reason);
  }

  async updateStats() {
    const v = this.video;
    const st = this.stats;
    st.transport = this.transport;
    const img = this.session && this.session.img;
    st.width = img ? img.naturalWidth : v.videoWidth;
    st.height = img ? img.naturalHeight : v.videoHeight;
    const q = v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality() : null;
    let frames = q ? q.totalVideoFrames : 0;
    let bytes = null;
    st.latency = null;
    const s = this.session;
    if (s && s.pc) {
      try {
        const report = await s.pc.getStats();
        let b = 0, rtt = null, jb = null;
        report.forEach((r) => {
          if (r.type === 'inbound-rtp') {
            b += r.bytesReceived || 0;
            if (r.kind === 'video') {
              frames = Math.max(frames, r.framesDecoded || 0);
              if (r.jitterBufferEmittedCount) jb = r.jitterBufferDelay / r.jitterBufferEmittedCount;
            }
          }
          if (r.type === 'candidate-pair' && r.nominated && r.currentRoundTripTime != null) rtt = r.currentRoundTripTime;
        });
        bytes = b;
        if (jb != null) st.latency = jb + (rtt || 0) / 2;
      } catch { /* closed */ }
    } else if (s && s.hls) {
      bytes = this.hlsBytes;
      if (Number.isFinite(s.hls.latency)) st.latency = s.hls.latency;
    }
    st.fps = this.lastFrames != null ? Math.max(0, frames - this.lastFrames) : 0;
    st.kbps = bytes != null && this.lastBytes != null ? Math.max(0, (bytes - this.lastBytes) * 8 / 1000) : 0;
    st.framesDecoded = frames;
    this.lastFrames = frames;
    this.lastBytes = bytes;
    const lat = st.latency == null ? '?'
      : st.latency < 1 ? `${Math.round(st.latency * 1000)} ms` : `${st.latency.toFixed(2)} s`;
    const state = this.stream ? this.stream.state : '?';
    this.overlay.textContent = this.opts.compact
      ? `${st.transport} ${st.width}×${st.height} ${st.fps} fps`
      : `${st.transport}  ${st.width}×${st.height}  ${st.fps} fps  ${Math.round(st.kbps)} kbit/s\nlatency ≈ ${lat}  stream ${state}`;
    if (this.transport !== 'none') {
      const words = [this.reason, this.stateText()].filter(Boolean).join(' · ');
      this.setMessage(words);
    }
  }
}

window.RtspgatePlayer = RtspgatePlayer;
