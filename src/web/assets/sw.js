// DocSpot service worker: keeps the app shell for offline start (the pages
// show "Reconnecting…" until the server is back). API calls and the live
// socket always go to the network: appointment data is never cached.
const CACHE = "docspot-shell-v2";
const SHELL = [
  "/", "/provider", "/manifest.webmanifest",
  "/assets/app.css", "/assets/i18n.js", "/assets/api.js", "/assets/live.js", "/assets/ui.js",
  "/assets/patient.js", "/assets/display.js", "/assets/provider.js", "/assets/display.html",
  "/assets/icon.svg", "/assets/icon-192.png",
];

self.addEventListener("install", (e) => {
  e.waitUntil(caches.open(CACHE).then((c) => c.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (e) => {
  e.waitUntil(caches.keys()
    .then((keys) => Promise.all(keys.filter((k) => k !== CACHE).map((k) => caches.delete(k))))
    .then(() => self.clients.claim()));
});

self.addEventListener("fetch", (e) => {
  const url = new URL(e.request.url);
  if (e.request.method !== "GET" || url.origin !== location.origin || url.pathname.startsWith("/api/")) return;
  // Network first (the server revalidates by ETag), the cache when offline.
  e.respondWith(
    fetch(e.request)
      .then((r) => {
        if (r.ok) { const copy = r.clone(); caches.open(CACHE).then((c) => c.put(e.request, copy)); }
        return r;
      })
      .catch(async () => (await caches.match(e.request))
        ?? (url.pathname.startsWith("/display/") ? caches.match("/assets/display.html") : caches.match("/"))),
  );
});

// A notification the provider page asked the worker to show (Android):
// clicking it brings the provider screen back.
self.addEventListener("notificationclick", (e) => {
  e.notification.close();
  e.waitUntil(self.clients.matchAll({ type: "window" }).then((list) => {
    const open = list.find((w) => new URL(w.url).pathname === "/provider");
    return open ? open.focus() : self.clients.openWindow("/provider");
  }));
});
