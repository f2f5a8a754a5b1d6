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

/** The page's one message line (role=alert, read out by screen readers). */
export function message(text, isError = false) {
  const m = document.getElementById("message");
  if (!m) return;
  m.textContent = text;
  m.classList.toggle("error", isError);
  m.hidden = false;
}

export function clear() {
  const m = document.getElementById("message");
  if (m) m.hidden = true;
}

export function registerWorker() {
  if ("serviceWorker" in navigator) navigator.serviceWorker.register("/sw.js").catch(() => {});
}
