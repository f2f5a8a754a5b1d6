// Clinic wall display: one line per doctor (next free time, the rest of
// today's schedule as times only, today's free, held and booked counts), live from the `clinic:{id}` topic, reconnecting
// by itself. Read-only: no sign-in.
import { t, applyStrings, time, dateTime, localDate } from "./i18n.js";
import { get } from "./api.js";
import { Live } from "./live.js";
import { el } from "./ui.js";

const $ = (id) => document.getElementById(id);
const clinicId = decodeURIComponent(location.pathname.split("/").filter(Boolean)[1] ?? "");
const lines = new Map(); // doctor_id → line
let clinic = { name: "", time_zone: "UTC" };

// How many of today's coming slots a line shows (more would not be
// readable from across the room).
const SCHEDULE_SLOTS = 8;

// The rest of today's slots, each a time coloured by its state; times only,
// never who booked.
function schedule(d, zone) {
  const now = Date.now();
  const coming = (d.today ?? []).filter((s) => Date.parse(s.start) >= now - 15 * 60_000).slice(0, SCHEDULE_SLOTS);
  return el("td", { class: "schedule" },
    ...coming.map((s) => el("span", {
      class: `chip ${s.status}`,
      "data-start": s.start,
      "data-status": s.status,
      "aria-label": `${time(s.start, zone)} ${t("slot_" + s.status)}`,
    }, time(s.start, zone))));
}

function render() {
  const zone = clinic.time_zone;
  const today = localDate(new Date().toISOString(), zone);
  const rows = [...lines.values()].sort((a, b) => a.name.localeCompare(b.name));
  $("board").replaceChildren(...rows.map((d) => {
    const nf = d.next_free?.start;
    const nextText = !nf ? t("none_free") : localDate(nf, zone) === today ? time(nf, zone) : dateTime(nf, zone);
    return el("tr", { "data-doctor": d.doctor_id, "data-next-free": nf ?? "" },
      el("th", { scope: "row" }, d.name),
      el("td", { class: "next" }, nextText),
      schedule(d, zone),
      el("td", { class: "num free" }, String(d.today_free)),
      el("td", { class: "num held" }, String(d.today_held)),
      el("td", { class: "num booked" }, String(d.today_booked)));
  }));
  $("title").textContent = t("board_title", { clinic: clinic.name });
  $("zone-note").textContent = t("times_in", { zone });
}

function tickClock() {
  $("clock").textContent = time(new Date().toISOString(), clinic.time_zone);
}

async function start() {
  applyStrings();
  try {
    clinic = await get(`/api/v1/clinics/${encodeURIComponent(clinicId)}`, { anonymous: true });
  } catch (e) {
    $("title").textContent = t("error", { detail: e.message });
    return;
  }
  document.title = `${clinic.name} — DocSpot`;
  render();
  tickClock();
  setInterval(tickClock, 10_000);
  const live = new Live((up) => {
    $("live-status").textContent = up ? t("live_on") : t("live_off");
    $("live-status").classList.toggle("off", !up);
  });
  live.subscribe(`clinic:${clinicId}`, {}, (m) => {
    if (m.type === "snapshot") {
      lines.clear();
      m.data.doctors.forEach((d) => lines.set(d.doctor_id, d));
    } else if (m.type === "delta" && m.data.doctor) {
      lines.set(m.data.doctor.doctor_id, m.data.doctor);
    }
    render();
  });
  // "Today" rolls over at the clinic's midnight: ask for a fresh snapshot.
  let day = localDate(new Date().toISOString(), clinic.time_zone);
  setInterval(() => {
    const now = localDate(new Date().toISOString(), clinic.time_zone);
    if (now !== day) { day = now; live.reconnectNow(); }
  }, 60_000);
}

$("fullscreen").addEventListener("click", () => document.documentElement.requestFullscreen?.().catch(() => {}));
start();
