// Every user-visible string of the web app, in one place. Add a language by
// adding a table with the same keys; `t()` falls back to English.
const STRINGS = {
  en: {
    app_name: "DocSpot",
    language: "Language",
    find_doctor: "Find a doctor",
    name: "Name",
    specialty: "Specialty",
    clinic: "Clinic",
    any_clinic: "Any clinic",
    search: "Search",
    no_doctors: "No doctors match.",
    choose: "Choose",
    free_slots: "Free times this week",
    suggested: "Suggested for you",
    suggested_signin: "Sign in to see times suggested for you.",
    no_slots: "No free times this week.",
    prev_week: "Previous week",
    next_week: "Next week",
    times_in: "Times in {zone}",
    sign_in: "Sign in",
    sign_out: "Sign out",
    register: "Register",
    email: "E-mail",
    password: "Password",
    your_name: "Your name",
    signed_in_as: "Signed in ({role})",
    hold_title: "Slot held for you",
    hold_expires: "Held for {time} more",
    hold_expired: "The hold lapsed. Pick a time again.",
    hold_one_minute: "One minute left to confirm your booking.",
    confirm: "Confirm booking",
    release: "Release",
    booked_ok: "Booked: {when}",
    slot_taken: "Sorry, that time was just taken.",
    my_appointments: "My appointments",
    none_yet: "No appointments yet.",
    cancel: "Cancel",
    reschedule: "Reschedule",
    reschedule_pick: "Pick a new time for {when} above.",
    rescheduled_ok: "Moved to {when}",
    cancelled_ok: "Cancelled.",
    download_ics: "Add to calendar (.ics)",
    status_booked: "booked",
    status_held: "held",
    status_cancelled: "cancelled",
    status_completed: "completed",
    status_no_show: "no-show",
    live_on: "Live",
    live_off: "Reconnecting…",
    error: "Something went wrong: {detail}",
    with_doctor: "with {doctor}",
    // wall display
    board_title: "{clinic} — today",
    next_free: "Next free",
    today_free: "Free today",
    today_schedule: "Today",
    slot_free: "free",
    slot_held: "held",
    slot_booked: "booked",
    today_held: "Held",
    today_booked: "Booked",
    doctor: "Doctor",
    none_free: "—",
    full_screen: "Full screen",
    // provider
    provider_title: "Provider",
    provider_need_doctor: "Sign in with a doctor account.",
    today: "Today",
    this_week: "This week",
    alerts: "Alerts",
    no_alerts: "No alerts yet.",
    enable_notifications: "Enable browser notifications",
    mark_completed: "Completed",
    mark_no_show: "No-show",
    alert_booked: "New booking: {when}",
    alert_hold_confirmed: "New booking: {when}",
    alert_cancelled: "Cancelled: {when}",
    alert_rescheduled: "Rescheduled to {when} (was {previous})",
    stats: "Last {weeks} weeks",
    chart_bookings: "Bookings per day",
    chart_no_show: "No-show rate per week",
    chart_fill: "Fill rate by hour",
    no_show_overall: "No-show rate: {rate}",
    nothing_today: "Nothing scheduled.",
    previous_day: "Previous day",
    next_day: "Next day",
    day_shown: "Day shown",
    patient: "Patient",
  },
  de: {
    app_name: "DocSpot",
    language: "Sprache",
    find_doctor: "Ärztin oder Arzt finden",
    name: "Name",
    specialty: "Fachgebiet",
    clinic: "Praxis",
    any_clinic: "Alle Praxen",
    search: "Suchen",
    no_doctors: "Keine Treffer.",
    choose: "Auswählen",
    free_slots: "Freie Termine diese Woche",
    suggested: "Für Sie vorgeschlagen",
    suggested_signin: "Melden Sie sich an, um Vorschläge zu sehen.",
    no_slots: "Diese Woche keine freien Termine.",
    prev_week: "Vorige Woche",
    next_week: "Nächste Woche",
    times_in: "Zeiten in {zone}",
    sign_in: "Anmelden",
    sign_out: "Abmelden",
    register: "Registrieren",
    email: "E-Mail",
    password: "Passwort",
    your_name: "Ihr Name",
    signed_in_as: "Angemeldet ({role})",
    hold_title: "Termin für Sie reserviert",
    hold_expires: "Noch {time} reserviert",
    hold_expired: "Die Reservierung ist abgelaufen. Bitte neu wählen.",
    hold_one_minute: "Noch eine Minute, um den Termin zu bestätigen.",
    confirm: "Termin bestätigen",
    release: "Freigeben",
    booked_ok: "Gebucht: {when}",
    slot_taken: "Dieser Termin wurde gerade vergeben.",
    my_appointments: "Meine Termine",
    none_yet: "Noch keine Termine.",
    cancel: "Absagen",
    reschedule: "Verschieben",
    reschedule_pick: "Wählen Sie oben eine neue Zeit für {when}.",
    rescheduled_ok: "Verschoben auf {when}",
    cancelled_ok: "Abgesagt.",
    download_ics: "In Kalender übernehmen (.ics)",
    status_booked: "gebucht",
    status_held: "reserviert",
    status_cancelled: "abgesagt",
    status_completed: "erledigt",
    status_no_show: "nicht erschienen",
    live_on: "Live",
    live_off: "Verbinde neu…",
    error: "Fehler: {detail}",
    with_doctor: "bei {doctor}",
    board_title: "{clinic} — heute",
    next_free: "Nächster freier Termin",
    today_free: "Heute frei",
    today_schedule: "Heute",
    slot_free: "frei",
    slot_held: "reserviert",
    slot_booked: "gebucht",
    today_held: "Reserviert",
    today_booked: "Gebucht",
    doctor: "Ärztin/Arzt",
    none_free: "—",
    full_screen: "Vollbild",
    provider_title: "Praxisansicht",
    provider_need_doctor: "Bitte mit einem Arztkonto anmelden.",
    today: "Heute",
    this_week: "Diese Woche",
    alerts: "Meldungen",
    no_alerts: "Noch keine Meldungen.",
    enable_notifications: "Browser-Benachrichtigungen einschalten",
    mark_completed: "Erledigt",
    mark_no_show: "Nicht erschienen",
    alert_booked: "Neue Buchung: {when}",
    alert_hold_confirmed: "Neue Buchung: {when}",
    alert_cancelled: "Abgesagt: {when}",
    alert_rescheduled: "Verschoben auf {when} (war {previous})",
    stats: "Letzte {weeks} Wochen",
    chart_bookings: "Buchungen pro Tag",
    chart_no_show: "Nichterscheinen pro Woche",
    chart_fill: "Auslastung nach Uhrzeit",
    no_show_overall: "Nichterscheinen: {rate}",
    nothing_today: "Nichts geplant.",
    previous_day: "Vorheriger Tag",
    next_day: "Nächster Tag",
    day_shown: "Angezeigter Tag",
    patient: "Patient/in",
  },
};

export const LANGUAGES = { en: "English", de: "Deutsch" };

function initial() {
  const saved = localStorage.getItem("docspot.lang");
  if (saved && STRINGS[saved]) return saved;
  for (const l of navigator.languages || [navigator.language || "en"]) {
    const base = String(l).slice(0, 2).toLowerCase();
    if (STRINGS[base]) return base;
  }
  return "en";
}

export let lang = initial();

/** The string `key` in the current language, `{name}` filled from `vars`. */
export function t(key, vars = {}) {
  const s = STRINGS[lang][key] ?? STRINGS.en[key] ?? key;
  return s.replace(/\{(\w+)\}/g, (_, k) => (k in vars ? String(vars[k]) : `{${k}}`));
}

/** Fills every `[data-i18n]` text and `[data-i18n-label]` aria-label. */
export function applyStrings(root = document) {
  document.documentElement.lang = lang;
  root.querySelectorAll("[data-i18n]").forEach((el) => { el.textContent = t(el.dataset.i18n); });
  root.querySelectorAll("[data-i18n-label]").forEach((el) => {
    el.setAttribute("aria-label", t(el.dataset.i18nLabel));
  });
  root.querySelectorAll("[data-i18n-placeholder]").forEach((el) => {
    el.setAttribute("placeholder", t(el.dataset.i18nPlaceholder));
  });
}

/** Wires a <select> to switch language; `onChange` re-renders dynamic parts. */
export function languageSwitch(select, onChange) {
  select.replaceChildren(...Object.entries(LANGUAGES).map(([code, label]) => {
    const o = document.createElement("option");
    o.value = code; o.textContent = label; o.selected = code === lang;
    return o;
  }));
  select.addEventListener("change", () => {
    lang = select.value;
    localStorage.setItem("docspot.lang", lang);
    applyStrings();
    onChange?.();
  });
  applyStrings();
}

const formatters = new Map();
function fmt(zone, opts) {
  const key = `${lang}|${zone}|${JSON.stringify(opts)}`;
  if (!formatters.has(key)) formatters.set(key, new Intl.DateTimeFormat(lang, { timeZone: zone, ...opts }));
  return formatters.get(key);
}

/** "09:30" in the clinic's zone. */
export const time = (iso, zone) => fmt(zone, { hour: "2-digit", minute: "2-digit" }).format(new Date(iso));
/** "Thu 26 Nov" in the clinic's zone. */
export const day = (iso, zone) => fmt(zone, { weekday: "short", day: "numeric", month: "short" }).format(new Date(iso));
/** "Thu 26 Nov, 09:30" in the clinic's zone. */
export const dateTime = (iso, zone) => fmt(zone, { weekday: "short", day: "numeric", month: "short", hour: "2-digit", minute: "2-digit" }).format(new Date(iso));
/** The local calendar date (YYYY-MM-DD) of an instant in the clinic's zone. */
export function localDate(iso, zone) {
  const p = Object.fromEntries(fmt(zone, { year: "numeric", month: "2-digit", day: "2-digit", calendar: "iso8601", numberingSystem: "latn" })
    .formatToParts(new Date(iso)).map((x) => [x.type, x.value]));
  return `${p.year}-${p.month}-${p.day}`;
}

/** `date` (YYYY-MM-DD) moved by `days`: calendar arithmetic, no zone. */
export function addDays(date, days) {
  const d = new Date(`${date}T00:00:00Z`);
  d.setUTCDate(d.getUTCDate() + days);
  return d.toISOString().slice(0, 10);
}

/** The instant the local date `date` (YYYY-MM-DD) begins in `zone`: its
 * midnight, found from the zone's UTC offset at that moment (asked twice,
 * so a DST change on that day is taken into account). */
export function zoneMidnight(date, zone) {
  const wall = fmt(zone, {
    year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit",
    second: "2-digit", hourCycle: "h23", calendar: "iso8601", numberingSystem: "latn",
  });
  // The zone's offset at instant `t`: its wall clock there, read as UTC, minus `t`.
  const offset = (t) => {
    const p = Object.fromEntries(wall.formatToParts(new Date(t)).map((x) => [x.type, x.value]));
    return Date.parse(`${p.year}-${p.month}-${p.day}T${p.hour}:${p.minute}:${p.second}Z`) - t;
  };
  const utc = Date.parse(`${date}T00:00:00Z`);
  const first = utc - offset(utc);
  return new Date(utc - offset(first));
}
