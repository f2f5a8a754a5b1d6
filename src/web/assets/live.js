// The live WebSocket (docs/realtime.md): subscribe to topics, get a
// snapshot then deltas with `seq`; after a drop reconnect with backoff and
// resume from the last applied `seq` (or take the fresh snapshot offered).
import { accessToken } from "./api.js";

export class Live {
  /** `onStatus(connected)` is told whenever the connection comes or goes. */
  constructor(onStatus = () => {}) {
    this.topics = new Map(); // topic -> {params, handler, seq, epoch}
    this.onStatus = onStatus;
    this.backoff = 500;
    this.ws = null;
    this.connected = false;
    this.connect();
    // Offline → online: do not wait for the backoff timer.
    addEventListener("online", () => { if (!this.connected) this.reconnectNow(); });
    // The server ends a sign-in when its token expires: hand it each new
    // token as the API refreshes it (a minute early), so private topics
    // never lapse. `token_expired` below is the fallback.
    setInterval(async () => {
      const token = this.connected ? await accessToken() : null;
      if (token && token !== this.sentToken) this.sendAuth(token);
    }, 30_000);
  }

  sendAuth(token) {
    this.sentToken = token;
    this.send({ type: "auth", token });
  }

  /** Watches `topic`; asking again with the same params only swaps the
   * handler, with other params (another week) re-subscribes. */
  subscribe(topic, params, handler) {
    const old = this.topics.get(topic);
    if (old && JSON.stringify(old.params) === JSON.stringify(params)) {
      old.handler = handler;
      return;
    }
    if (old && this.connected) this.send({ type: "unsubscribe", topic });
    this.topics.set(topic, { params, handler, seq: null, epoch: null });
    this.sendSubscribe(topic);
  }

  unsubscribe(topic) {
    if (this.topics.delete(topic) && this.connected) this.send({ type: "unsubscribe", topic });
  }

  send(m) { if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(m)); }

  sendSubscribe(topic) {
    const s = this.topics.get(topic);
    if (!s || !this.connected) return;
    const resume = s.seq !== null && s.epoch ? { resume_seq: s.seq, epoch: s.epoch } : {};
    this.send({ type: "subscribe", topic, ...s.params, ...resume });
  }

  /** Re-sends the token (after signing in; `fresh` forces a new one). */
  async reauth(fresh = false) {
    const token = await accessToken({ fresh });
    if (token) this.sendAuth(token);
  }

  /** After `token_expired`: a fresh token, then the private topics again
   * (resuming, so nothing in between is lost). */
  async renew() {
    await this.reauth(true);
    for (const topic of this.topics.keys()) {
      if (topic === "me" || topic.startsWith("provider:")) this.sendSubscribe(topic);
    }
  }

  async connect() {
    clearTimeout(this.timer);
    const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/api/v1/live`;
    const ws = new WebSocket(url, "docspot.json.v1");
    this.ws = ws;
    ws.onopen = async () => {
      this.backoff = 500;
      this.connected = true;
      const token = await accessToken();
      if (token) this.sendAuth(token);
      for (const topic of this.topics.keys()) this.sendSubscribe(topic);
      this.onStatus(true);
    };
    ws.onmessage = (e) => {
      let m;
      try { m = JSON.parse(e.data); } catch { return; }
      if (m.type === "error" && m.code === "token_expired") {
        // The server closed `me` / `provider:` when the access token ran
        // out: send a fresh one and pick them up again from the last seq.
        this.renew();
        return;
      }
      const s = m.topic && this.topics.get(m.topic);
      if (!s) return;
      if (m.type === "snapshot") {
        s.seq = m.seq; s.epoch = m.epoch;
        s.handler(m);
      } else if (m.type === "delta") {
        if (s.seq !== null && m.seq <= s.seq) return; // already reflected
        s.seq = m.seq;
        s.handler(m);
      } else if (m.type === "error") {
        s.handler(m);
      }
    };
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.connected = false;
      this.onStatus(false);
      // Exponential backoff with jitter, capped: a room full of wall
      // displays must not hammer a server that just came back.
      const wait = Math.min(this.backoff, 10_000) * (0.5 + Math.random() / 2);
      this.backoff = Math.min(this.backoff * 2, 10_000);
      this.timer = setTimeout(() => this.connect(), wait);
    };
    ws.onerror = () => ws.close();
  }

  reconnectNow() {
    const old = this.ws;
    this.ws = null;
    old?.close();
    this.connect();
  }
}
