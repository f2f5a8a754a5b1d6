// Provider screen: the signed-in doctor's day and week, instant alerts
// (in-page and browser notifications) from the `provider:{doctor_id}` topic,
// outcomes (completed / no-show), and charts of the last weeks.
import { t, languageSwitch, time, day, dateTime, localDate, addDays } from "./i18n.js";
import * as api from "./api.js";
import { Live } from "./live.js";
import { el, show, message, clear, registerWorker, retranslate } from "./ui.js";

registerWorker();

const $ = (id) => document.getElementById(id);
let lastSub = null; // who the live socket is signed in as
const WEEKS = 4;
let doctor = null;
let alerts = [];
let stats = null;
let todayList = [];
let weekList = [];
// The day the day panel shows (YYYY-MM-DD in the clinic's zone); null is
// today. Earlier days stay open: a visit left unmarked can still be marked.
let shownDate = null;

const live = new Live((up) => {
  $("live-status").textContent = up ? t("live_on") : t("live_off");
  $("live-status").classList.toggle("off", !up);
});

const zone = () => doctor?.time_zone ?? "UTC";
const shortId = (id) => String(id).slice(-6);

async function onSession(c) {
  $("who").textContent = c ? t("signed_in_as", { role: c.role }) : "";
  show($("sign-out"), !!c);
  const isDoctor = c?.role === "doctor" && c.doctor_id;
  show($("signin"), !isDoctor);
  show($("desk"), !!isDoctor);
  if (!isDoctor) {
    if (doctor) live.unsubscribe(`provider:${doctor.id}`);
    doctor = null;
    return;
  }
  // The socket must know who we are before private topics are asked for;
  // a socket signed in as someone else is replaced (it cannot switch users).
  if (lastSub && c?.sub !== lastSub) live.reconnectNow(); else await live.reauth();
  lastSub = c?.sub ?? null;
  doctor = await api.get(`/api/v1/doctors/${c.doctor_id}`, { anonymous: true });
  $("zone-note").textContent = `${doctor.name} · ${t("times_in", { zone: zone() })}`;
  live.subscribe(`provider:${doctor.id}`, {}, onAlert);
  refresh();
}

async function refresh() {
  if (!doctor) return;
  try {
    // The next seven days only: a refresh per alert must stay cheap.
    const now = Date.now(), end = now + 7 * 86_400_000;
    const window = `from=${encodeURIComponent(new Date(now).toISOString())}` +
      `&to=${encodeURIComponent(new Date(end).toISOString())}`;
    const [dayR, all, st] = await Promise.all([
      api.get(`/api/v1/doctors/${doctor.id}/day${shownDate ? `?date=${shownDate}` : ""}`),
      api.get(`/api/v1/appointments?doctor_id=${doctor.id}&${window}`),
      api.get(`/api/v1/doctors/${doctor.id}/stats?weeks=${WEEKS}`),
    ]);
    todayList = dayR.appointments.filter((a) => a.status !== "held");
    weekList = all.appointments
      .filter((a) => a.status === "booked")
      .sort((a, b) => a.start.localeCompare(b.start));
    stats = st;
    render();
  } catch (e) {
    message(() => t("error", { detail: e.message }), true);
  }
}

// ---- alerts -------------------------------------------------------------

function alertText(a) {
  return t(`alert_${a.kind}`, {
    when: dateTime(a.start, zone()),
    previous: a.previous_start ? dateTime(a.previous_start, zone()) : "",
  });
}

function onAlert(m) {
  if (m.type === "snapshot") {
    alerts = [...m.data.alerts].reverse();
  } else if (m.type === "delta" && m.data.alert) {
    const a = m.data.alert;
    alerts.unshift(a);
    toast(a);
    notify(a);
    refresh();
  } else if (m.type === "error") {
    message(() => t("error", { detail: m.message }), true);
  }
  renderAlerts();
}

const toastAlerts = new WeakMap();
function toast(a) {
  const box = el("div", { class: `toast ${a.kind}`, role: "status" }, alertText(a));
  toastAlerts.set(box, a); // re-rendered on a language switch
  $("toasts").prepend(box);
  // At most two at a time, so a burst of bookings does not cover the page:
  // every alert stays in the list above.
  $("toasts").querySelectorAll(".toast").forEach((b, i) => { if (i >= 2) b.remove(); });
  setTimeout(() => box.remove(), 15_000);
}

/** A browser notification while the page is in the background. The page's
 * own `new Notification()` works on desktops; Android Chrome throws
 * ("use ServiceWorkerRegistration.showNotification()"), so then the service
 * worker shows it. */
async function notify(a) {
  if (!("Notification" in window) || Notification.permission !== "granted" || document.hasFocus()) return;
  const options = { body: alertText(a), tag: `alert-${a.id}`, icon: "/assets/icon-192.png" };
  try {
    new Notification("DocSpot", options);
    return;
  } catch { /* Android: only the worker may show one */ }
  try {
    const reg = await navigator.serviceWorker?.ready;
    await reg?.showNotification("DocSpot", options);
  } catch { /* no worker: the in-page toast and alert list remain */ }
}

function renderAlerts() {
  $("alerts").replaceChildren(...(alerts.length ? alerts.slice(0, 30).map((a) =>
    el("li", { class: `alert ${a.kind}`, "data-kind": a.kind },
      el("span", {}, alertText(a)),
      el("time", { class: "muted", datetime: a.at }, ` · ${time(a.at, zone())}`)))
    : [el("li", { class: "muted" }, t("no_alerts"))]));
  const canAsk = "Notification" in window && Notification.permission === "default";
  show($("notify"), canAsk);
}

// ---- day, week, outcomes ------------------------------------------------

async function outcome(a, status) {
  clear();
  try {
    await api.post(`/api/v1/appointments/${a.id}/outcome`, { status });
    refresh();
  } catch (e) {
    message(() => t("error", { detail: e.message }), true);
  }
}

function appointmentItem(a, withDay) {
  const started = Date.parse(a.start) <= Date.now();
  return el("li", { class: `appointment ${a.status}`, "data-id": a.id },
    el("div", {},
      el("strong", {}, withDay ? dateTime(a.start, zone()) : `${time(a.start, zone())}–${time(a.end, zone())}`),
      el("span", { class: "muted" }, ` · ${t("patient")} …${shortId(a.patient_id)} · `),
      el("span", { class: `status ${a.status}` }, t(`status_${a.status}`))),
    a.status === "booked" && started && el("div", { class: "row" },
      el("button", { type: "button", class: "completed", onclick: () => outcome(a, "completed") }, t("mark_completed")),
      el("button", { type: "button", class: "no-show danger", onclick: () => outcome(a, "no_show") }, t("mark_no_show"))));
}

/** Today's date in the clinic's zone. */
const todayDate = () => localDate(new Date().toISOString(), zone());

/** Shows `date` (YYYY-MM-DD) in the day panel; today for null. */
function showDay(date) {
  shownDate = date && date !== todayDate() ? date : null;
  refresh();
}

$("day-prev").addEventListener("click", () => showDay(addDays(shownDate ?? todayDate(), -1)));
$("day-next").addEventListener("click", () => showDay(addDays(shownDate ?? todayDate(), 1)));
$("day-today").addEventListener("click", () => showDay(null));
$("day-pick").addEventListener("change", (e) => { if (e.target.value) showDay(e.target.value); });

function render() {
  $("today-h").textContent = shownDate ? day(`${shownDate}T12:00:00Z`, "UTC") : t("today");
  $("day-pick").value = shownDate ?? (doctor ? todayDate() : "");
  show($("day-today"), !!shownDate);
  $("today").replaceChildren(...(todayList.length ? todayList.map((a) => appointmentItem(a, false))
    : [el("li", { class: "muted" }, t("nothing_today"))]));
  const byDay = new Map();
  for (const a of weekList) {
    const k = localDate(a.start, zone());
    if (!byDay.has(k)) byDay.set(k, []);
    byDay.get(k).push(a);
  }
  $("week").replaceChildren(...[...byDay.values()].map((list) =>
    el("div", { class: "day" }, el("h4", {}, day(list[0].start, zone())),
      el("ul", { class: "appointments" }, ...list.map((a) => appointmentItem(a, false))))));
  renderStats();
  renderAlerts();
}

// ---- charts (SVG, no library) ---------------------------------------------

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs = {}, ...kids) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  kids.forEach((k) => e.append(k));
  return e;
}

/** A bar chart of `values` (0..max) with `labels`; `fmt` for the tooltip. */
function barChart(values, labels, max, fmt, label) {
  const w = 900, h = 130, pad = 40;
  const n = Math.max(values.length, 1), bw = (w - pad) / n;
  const chart = svg("svg", { viewBox: `0 0 ${w} ${h + pad}`, role: "img", "aria-label": label, class: "bars" });
  chart.append(svg("line", { x1: pad, y1: h, x2: w, y2: h, class: "axis" }));
  const top = svg("text", { x: 2, y: 18, class: "tick start" });
  top.textContent = fmt(max);
  chart.append(top);
  chart.append(svg("line", { x1: pad, y1: 10, x2: w, y2: 10, class: "grid" }));
  values.forEach((v, i) => {
    const bh = max > 0 && v !== null ? (v / max) * (h - 10) : 0;
    const x = pad + i * bw;
    const bar = svg("rect", { x: x + 1, y: h - bh, width: Math.max(bw - 2, 1), height: bh, class: v === null ? "bar none" : "bar" },
      svg("title", {}, document.createTextNode(`${labels[i]}: ${v === null ? "—" : fmt(v)}`)));
    chart.append(bar);
    if (n <= 24 || i % Math.ceil(n / 14) === 0) {
      const tx = svg("text", { x: x + bw / 2, y: h + 14, class: "tick" });
      tx.textContent = labels[i];
      chart.append(tx);
    }
  });
  return chart;
}

function renderStats() {
  if (!stats) return;
  $("stats-h").textContent = t("stats", { weeks: WEEKS });
  const pct = (x) => `${Math.round(x * 100)} %`;
  $("no-show").textContent = t("no_show_overall", { rate: stats.no_show_rate === null ? "—" : pct(stats.no_show_rate) });
  const days = stats.bookings_per_day;
  const dayLabel = (d) => d.date.slice(8);
  $("chart-bookings").replaceChildren(barChart(days.map((d) => d.booked), days.map(dayLabel),
    Math.max(1, ...days.map((d) => d.booked)), String, t("chart_bookings")));
  const weeks = stats.no_show_by_week;
  $("chart-no-show").replaceChildren(barChart(weeks.map((w) => w.no_show_rate), weeks.map((w) => w.week_start.slice(5)),
    1, pct, t("chart_no_show")));
  const hours = stats.fill_by_hour.filter((x) => x.open_minutes > 0);
  $("chart-fill").replaceChildren(barChart(hours.map((x) => x.fill_rate), hours.map((x) => String(x.hour).padStart(2, "0")),
    1, pct, t("chart_fill")));
}

// ---- wiring -------------------------------------------------------------

$("signin-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  clear();
  try {
    await api.signIn($("email").value.trim(), $("password").value);
    $("password").value = "";
  } catch (err) {
    message(() => t("error", { detail: err.message }), true);
  }
});
$("sign-out").addEventListener("click", () => api.signOut());
$("notify").addEventListener("click", async () => {
  await Notification.requestPermission();
  renderAlerts();
});
languageSwitch($("lang"), () => {
  retranslate();
  $("toasts").querySelectorAll(".toast").forEach((b) => {
    if (toastAlerts.has(b)) b.textContent = alertText(toastAlerts.get(b));
  });
  const c = api.claims();
  $("who").textContent = c ? t("signed_in_as", { role: c.role }) : "";
  if (doctor) $("zone-note").textContent = `${doctor.name} · ${t("times_in", { zone: zone() })}`;
  render();
});
api.onSession(onSession);
onSession(api.claims());
// Outcomes become possible as visits start: re-render every minute.
setInterval(render, 60_000);
