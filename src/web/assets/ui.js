// Small DOM helpers shared by the pages (no framework).

/** Creates an element: attributes (on* become listeners), then children. */
export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === false || v === null || v === undefined) continue;
    if (k.startsWith("on") && typeof v === "function") e.addEventListener(k.slice(2), v);
    else if (v === true) e.setAttribute(k, "");
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c !== false && c !== null && c !== undefined) e.append(c);
  return e;
}

export function show(e, on) { e.hidden = !on; }

let hideTimer = null;
let current = null; // what the line shows: a string, or a function making it
/** The page's one message line (role=alert, read out by screen readers),
 * pinned to the bottom of the screen; good news fades after a while, a
 * click dismisses it. Pass a function (`() => t(...)`) and the line follows
 * a language switch (see `retranslate`). */
export function message(text, isError = false) {
  const m = document.getElementById("message");
  if (!m) return;
  current = text;
  m.textContent = typeof text === "function" ? text() : text;
  m.classList.toggle("error", isError);
  m.hidden = false;
  m.onclick = () => { m.hidden = true; };
  clearTimeout(hideTimer);
  if (!isError) hideTimer = setTimeout(() => { m.hidden = true; }, 8000);
}

/** Re-renders a visible message in the current language. */
export function retranslate() {
  const m = document.getElementById("message");
  if (m && !m.hidden && typeof current === "function") m.textContent = current();
}

export function clear() {
  const m = document.getElementById("message");
  if (m) m.hidden = true;
}

export function registerWorker() {
  if ("serviceWorker" in navigator) navigator.serviceWorker.register("/sw.js").catch(() => {});
}
