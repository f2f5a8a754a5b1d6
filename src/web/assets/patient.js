// Patient page: find a doctor, watch the week's free times live, hold a
// slot (with a countdown), sign in, confirm; see, move, cancel and export
// own appointments.
import { t, applyStrings, languageSwitch, time, day, dateTime, localDate, addDays, zoneMidnight } from "./i18n.js";
import * as api from "./api.js";
import { Live } from "./live.js";
import { registerWorker, el, show, message, clear, retranslate } from "./ui.js";

registerWorker();

const $ = (id) => document.getElementById(id);
let lastSub = null; // who the live socket is signed in as
const state = {
  doctor: null,        // the chosen doctor
  // First day of the week shown (YYYY-MM-DD in the doctor's zone): weeks
  // run from local midnight to local midnight, wherever the browser is.
  weekDate: null,
  slots: new Map(),    // start ISO → {start, end, status}
  hold: null,          // the current hold (appointment)
  pending: null,       // a slot picked before signing in
  rescheduling: null,  // the appointment being moved
  appointments: [],
  doctors: new Map(),  // id → doctor, for names in "my appointments"
};
let countdownTimer = null;

/** Today in the chosen doctor's zone (YYYY-MM-DD). */
const today = () => localDate(new Date().toISOString(), state.doctor.time_zone);

const live = new Live((up) => {
  $("live-status").textContent = up ? t("live_on") : t("live_off");
  $("live-status").classList.toggle("off", !up);
});

// ---- search -------------------------------------------------------------

async function loadClinics() {
  const { clinics } = await api.get("/api/v1/clinics", { anonymous: true });
  const sel = $("q-clinic");
  sel.replaceChildren(el("option", { value: "" }, t("any_clinic")),
    ...clinics.map((c) => el("option", { value: c.id }, c.name)));
}

async function search(ev) {
  ev?.preventDefault();
  const q = new URLSearchParams();
  for (const [k, id] of [["name", "q-name"], ["specialty", "q-specialty"], ["clinic", "q-clinic"]]) {
    const v = $(id).value.trim();
    if (v) q.set(k, v);
  }
  const { doctors } = await api.get(`/api/v1/doctors?${q}`, { anonymous: true });
  doctors.forEach((d) => state.doctors.set(d.id, d));
  const specs = new Set(doctors.flatMap((d) => d.specialties));
  $("specialties").replaceChildren(...[...specs].map((s) => el("option", { value: s })));
  $("doctors").replaceChildren(...(doctors.length ? doctors.map((d) =>
    el("li", { class: "doctor" },
      el("div", {}, el("strong", {}, d.name), el("span", { class: "muted" }, d.specialties.join(", "))),
      el("button", { type: "button", class: "choose", "data-doctor": d.id, onclick: () => choose(d) }, t("choose"))))
    : [el("li", { class: "muted" }, t("no_doctors"))]));
}

// ---- one doctor's week ----------------------------------------------------

function choose(d) {
  if (state.doctor) live.unsubscribe(`doctor:${state.doctor.id}`);
  state.doctor = d;
  state.weekDate = today();
  show($("doctor"), true);
  $("doctor-h").textContent = d.name;
  watchWeek();
  loadSuggestions();
  $("doctor").scrollIntoView({ behavior: "smooth", block: "start" });
}

function watchWeek() {
  const d = state.doctor;
  const zone = d.time_zone;
  const from = new Date(Math.max(zoneMidnight(state.weekDate, zone).getTime(), api.serverNow()));
  const to = zoneMidnight(addDays(state.weekDate, 7), zone);
  state.slots.clear();
  renderWeek();
  live.subscribe(`doctor:${d.id}`, { from: from.toISOString(), to: to.toISOString() }, (m) => {
    if (m.type === "snapshot") {
      state.slots.clear();
      m.data.slots.forEach((s) => state.slots.set(s.start, s));
    } else if (m.type === "delta") {
      const x = m.data;
      if (x.kind === "schedule_changed") { watchWeek(); return; }
      if (x.previous_start) state.slots.set(x.previous_start, { start: x.previous_start, end: x.previous_end, status: "free" });
      if (x.start) state.slots.set(x.start, { start: x.start, end: x.end, status: x.status });
    } else if (m.type === "error") {
      message(() => t("error", { detail: m.message }), true);
    }
    renderWeek();
    renderSuggestions();
  });
}

function slotButton(s, extra = "") {
  const zone = state.doctor.time_zone;
  return el("button", {
    type: "button", class: `slot ${extra}`, "data-start": s.start,
    "aria-label": dateTime(s.start, zone), onclick: () => pick(s),
  }, time(s.start, zone));
}

function renderWeek() {
  const zone = state.doctor.time_zone;
  $("zone-note").textContent = t("times_in", { zone });
  const now = api.serverNow();
  const free = [...state.slots.values()]
    .filter((s) => s.status === "free" && Date.parse(s.start) > now)
    .sort((a, b) => a.start.localeCompare(b.start));
  const byDay = new Map();
  for (const s of free) {
    const k = localDate(s.start, zone);
    if (!byDay.has(k)) byDay.set(k, []);
    byDay.get(k).push(s);
  }
  $("week").replaceChildren(...(byDay.size ? [...byDay.values()].map((list) =>
    el("div", { class: "day", role: "group", "aria-label": day(list[0].start, zone) },
      el("h4", {}, day(list[0].start, zone)),
      el("div", { class: "slots" }, ...list.map((s) => slotButton(s)))))
    : [el("p", { class: "muted" }, t("no_slots"))]));
  $("prev-week").disabled = state.weekDate <= today();
}

let suggestions = [];
async function loadSuggestions() {
  suggestions = [];
  if (!api.claims() || api.claims().role !== "patient") { renderSuggestions(); return; }
  try {
    const r = await api.get(`/api/v1/doctors/${state.doctor.id}/suggestions?limit=5`);
    suggestions = r.suggestions;
  } catch { suggestions = []; }
  renderSuggestions();
}

function renderSuggestions() {
  const box = $("suggestions");
  if (!api.claims()) { box.replaceChildren(el("p", { class: "muted" }, t("suggested_signin"))); return; }
  // A suggestion somebody just took disappears like any other slot.
  const still = suggestions.filter((s) => (state.slots.get(s.start)?.status ?? "free") === "free");
  const zone = state.doctor.time_zone;
  box.replaceChildren(...still.map((s) => el("button", {
    type: "button", class: "slot suggested", "data-start": s.start, title: s.reasons.join("; "),
    "aria-label": dateTime(s.start, zone), onclick: () => pick(s),
  }, dateTime(s.start, zone))));
}

// ---- hold, sign in, confirm -------------------------------------------------

async function pick(s) {
  clear();
  if (state.rescheduling) return moveTo(s);
  if (!api.claims()) {
    state.pending = s;
    show($("signin"), true);
    $("email").focus();
    return;
  }
  try {
    if (state.hold) await release(true);
    state.hold = await api.post("/api/v1/holds", { doctor_id: state.doctor.id, start: s.start });
    showHold();
  } catch (e) {
    message(() => (e.code === "slot_taken" ? t("slot_taken") : t("error", { detail: e.message })), true);
  }
}

function showHold() {
  const h = state.hold;
  show($("hold"), true);
  $("hold-when").textContent = dateTime(h.start, state.doctor.time_zone);
  clearInterval(countdownTimer);
  // The countdown itself is not read out (aria-live off: every second would
  // drown everything else); the message line announces the last minute once.
  let warned = false;
  const tick = () => {
    // Whole seconds left, rounded down: never more than the hold's length,
    // even with the half-second uncertainty of the server's clock.
    const left = Math.max(0, Math.floor((Date.parse(h.hold_expires_at) - api.serverNow()) / 1000));
    const mmss = `${Math.floor(left / 60)}:${String(left % 60).padStart(2, "0")}`;
    $("hold-countdown").textContent = t("hold_expires", { time: mmss });
    if (left > 0 && left <= 60 && !warned) {
      warned = true;
      message(() => t("hold_one_minute"));
    }
    if (left === 0) {
      clearInterval(countdownTimer);
      state.hold = null;
      show($("hold"), false);
      message(() => t("hold_expired"), true);
    }
  };
  tick();
  countdownTimer = setInterval(tick, 1000);
  $("hold-confirm").focus();
}

async function confirmHold() {
  const h = state.hold;
  if (!h) return;
  try {
    const a = await api.post(`/api/v1/holds/${h.id}/confirm`);
    clearInterval(countdownTimer);
    state.hold = null;
    show($("hold"), false);
    message(() => t("booked_ok", { when: dateTime(a.start, state.doctor.time_zone) }));
    loadMine();
  } catch (e) {
    message(() => t("error", { detail: e.message }), true);
  }
}

async function release(quiet = false) {
  const h = state.hold;
  if (!h) return;
  clearInterval(countdownTimer);
  state.hold = null;
  show($("hold"), false);
  try { await api.call("DELETE", `/api/v1/holds/${h.id}`); } catch (e) { if (!quiet) message(() => t("error", { detail: e.message }), true); }
}

async function signInSubmit(ev, registering = false) {
  ev.preventDefault();
  clear();
  const email = $("email").value.trim(), password = $("password").value;
  try {
    if (registering) await api.register(email, password, $("reg-name").value.trim() || email);
    else await api.signIn(email, password);
    $("password").value = "";
  } catch (e) {
    message(() => t("error", { detail: e.message }), true);
    return;
  }
  const next = state.pending;
  state.pending = null;
  if (next) pick(next);
}

async function onSession(c) {
  $("who").textContent = c ? t("signed_in_as", { role: c.role }) : "";
  show($("sign-out"), !!c);
  show($("sign-in-open"), !c);
  if (c) show($("signin"), false);
  show($("mine"), c?.role === "patient");
  // The socket must know who we are before private topics are asked for;
  // a socket signed in as someone else is replaced (it cannot switch users).
  if (lastSub && c?.sub !== lastSub) live.reconnectNow(); else await live.reauth();
  lastSub = c?.sub ?? null;
  if (c?.role === "patient") {
    loadMine();
    live.subscribe("me", {}, (m) => { if (m.type !== "error") loadMine(); });
  } else {
    live.unsubscribe("me");
  }
  if (state.doctor) loadSuggestions();
}

// ---- my appointments --------------------------------------------------------

async function doctorOf(id) {
  if (!state.doctors.has(id)) state.doctors.set(id, await api.get(`/api/v1/doctors/${id}`, { anonymous: true }));
  return state.doctors.get(id);
}

async function loadMine() {
  if (api.claims()?.role !== "patient") return;
  const { appointments } = await api.get("/api/v1/appointments");
  state.appointments = appointments.filter((a) => a.status !== "held");
  await Promise.all(state.appointments.map((a) => doctorOf(a.doctor_id).catch(() => null)));
  renderMine();
}

function renderMine() {
  const list = state.appointments;
  $("appointments").replaceChildren(...(list.length ? list.map((a) => {
    const d = state.doctors.get(a.doctor_id);
    const zone = d?.time_zone ?? "UTC";
    const upcoming = a.status === "booked" && Date.parse(a.start) > api.serverNow();
    return el("li", { class: `appointment ${a.status}`, "data-id": a.id },
      el("div", {},
        el("strong", {}, dateTime(a.start, zone)),
        el("span", { class: "muted" }, ` ${t("with_doctor", { doctor: d?.name ?? "" })} · `),
        el("span", { class: `status ${a.status}` }, t(`status_${a.status}`))),
      el("div", { class: "row" },
        el("button", { type: "button", class: "ics", onclick: () => downloadIcs(a) }, t("download_ics")),
        upcoming && el("button", { type: "button", class: "reschedule", onclick: () => startReschedule(a, d) }, t("reschedule")),
        upcoming && el("button", { type: "button", class: "cancel danger", onclick: () => cancel(a) }, t("cancel"))));
  }) : [el("li", { class: "muted" }, t("none_yet"))]));
}

async function downloadIcs(a) {
  try {
    const r = await api.call("GET", `/api/v1/appointments/${a.id}/ics`, undefined, { raw: true });
    const url = URL.createObjectURL(await r.blob());
    const link = el("a", { href: url, download: `docspot-${a.id}.ics`, hidden: true });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
  } catch (e) {
    message(() => t("error", { detail: e.message }), true);
  }
}

async function cancel(a) {
  try {
    await api.post(`/api/v1/appointments/${a.id}/cancel`, { reason: "cancelled in the web app" });
    message(() => t("cancelled_ok"));
    loadMine();
  } catch (e) {
    message(() => t("error", { detail: e.message }), true);
  }
}

function startReschedule(a, d) {
  state.rescheduling = a;
  if (d && state.doctor?.id !== d.id) choose(d);
  const note = $("reschedule-note");
  note.textContent = t("reschedule_pick", { when: dateTime(a.start, d?.time_zone ?? "UTC") });
  show(note, true);
  note.scrollIntoView({ behavior: "smooth", block: "center" });
}

async function moveTo(s) {
  const a = state.rescheduling;
  state.rescheduling = null;
  show($("reschedule-note"), false);
  try {
    const moved = await api.post(`/api/v1/appointments/${a.id}/reschedule`, { start: s.start });
    message(() => t("rescheduled_ok", { when: dateTime(moved.start, state.doctor.time_zone) }));
    loadMine();
  } catch (e) {
    message(() => (e.code === "slot_taken" ? t("slot_taken") : t("error", { detail: e.message })), true);
  }
}

// ---- wiring -----------------------------------------------------------------

languageSwitch($("lang"), () => {
  retranslate();
  if (state.hold) $("hold-when").textContent = dateTime(state.hold.start, state.doctor.time_zone);
  if (state.doctor) { renderWeek(); renderSuggestions(); }
  renderMine();
  const c = api.claims();
  $("who").textContent = c ? t("signed_in_as", { role: c.role }) : "";
  loadClinics();
});
$("search").addEventListener("submit", search);
$("signin-form").addEventListener("submit", (e) => signInSubmit(e));
$("register").addEventListener("click", (e) => signInSubmit(e, true));
$("hold-confirm").addEventListener("click", confirmHold);
$("hold-release").addEventListener("click", () => release());
$("sign-out").addEventListener("click", () => { api.signOut(); });
$("sign-in-open").addEventListener("click", () => { show($("signin"), true); $("email").focus(); });
$("prev-week").addEventListener("click", () => { state.weekDate = addDays(state.weekDate, -7); watchWeek(); });
$("next-week").addEventListener("click", () => { state.weekDate = addDays(state.weekDate, 7); watchWeek(); });
api.onSession(onSession);
applyStrings();
onSession(api.claims());
loadClinics().then(() => search()).catch((e) => message(() => t("error", { detail: e.message }), true));
