//! A small W3C WebDriver client over reqwest, enough for the browser tests:
//! start chromedriver, open headless Chromium sessions, click, type, read,
//! run a script, take screenshots.
//!
//! Chromium and chromedriver are Debian packages (`chromium`,
//! `chromium-driver`); `scripts/test` installs them when missing. When they
//! are missing here the tests fail and say so: they never skip.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use base64::Engine;
use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The browser's own time zone: deliberately none of the clinics' zones the
/// tests use (UTC, Europe/Berlin), so a page that showed times in the
/// browser's zone instead of the clinic's would fail.
pub const BROWSER_TZ: &str = "America/Los_Angeles";
/// The W3C key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A running chromedriver, killed on drop.
pub struct Driver {
    url: String,
    child: Child,
    http: reqwest::Client,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where screenshots go: `$CARGO_TARGET_DIR/browser-artifacts` (else
/// `target/browser-artifacts` in the crate).
pub fn artifacts_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("browser-artifacts");
    std::fs::create_dir_all(&dir).expect("create the browser artifacts directory");
    dir
}

impl Driver {
    /// Starts chromedriver on a free port and waits until it is ready.
    pub async fn start() -> Driver {
        for bin in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(bin).exists(),
                "{bin} is missing: install the Debian packages `chromium` and `chromium-driver` \
                 (scripts/test does this) — the browser tests do not skip"
            );
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // Chromium inherits chromedriver's environment: TZ sets its zone.
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .env("TZ", BROWSER_TZ)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let driver = Driver {
            url: format!("http://127.0.0.1:{port}"),
            child,
            http: reqwest::Client::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = driver
                .http
                .get(format!("{}/status", driver.url))
                .send()
                .await
                && let Ok(v) = r.json::<Value>().await
                && v["value"]["ready"] == true
            {
                return driver;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A fresh headless Chromium (own profile) with a `width`×`height` window.
    pub async fn session(&self, width: u32, height: u32) -> Browser {
        let profile =
            std::env::temp_dir().join(format!("docspot-chromium-{}", uuid::Uuid::new_v4()));
        let downloads = profile.join("downloads");
        std::fs::create_dir_all(&downloads).unwrap();
        let mut caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:loggingPrefs": {"browser": "ALL"},
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                // Without the background-networking flags Chromium waits on
                // a network that this closed machine does not have.
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--hide-scrollbars",
                    format!("--window-size={width},{height}"),
                    format!("--user-data-dir={}", profile.display()),
                ],
                "prefs": {
                    "download.default_directory": downloads.display().to_string(),
                    "download.prompt_for_download": false,
                },
            },
        }}});
        if width < 500 {
            // Desktop Chromium windows are at least 500 px wide: phones are
            // emulated (viewport, touch, mobile user agent).
            caps["capabilities"]["alwaysMatch"]["goog:chromeOptions"]["mobileEmulation"] = json!({
                "deviceMetrics": {"width": width, "height": height, "pixelRatio": 2, "touch": true},
                "userAgent": "Mozilla/5.0 (Linux; Android 14; Pixel) AppleWebKit/537.36 (KHTML, like Gecko) Chromium Mobile Safari/537.36",
            });
        }
        let r = self
            .http
            .post(format!("{}/session", self.url))
            .json(&caps)
            .send()
            .await
            .expect("new WebDriver session");
        let v: Value = r.json().await.unwrap();
        let id = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_string();
        Browser {
            base: format!("{}/session/{id}", self.url),
            http: self.http.clone(),
            profile,
            downloads,
        }
    }
}

/// One browser session. Dropping it does not close the window; call
/// [`Browser::close`] (the driver's drop kills everything anyway).
pub struct Browser {
    base: String,
    http: reqwest::Client,
    profile: PathBuf,
    pub downloads: PathBuf,
}

impl Browser {
    async fn cmd(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        match self.try_cmd(method, path, body).await {
            Ok(v) => v,
            Err((err, message)) => panic!("WebDriver {path}: {err}: {message}"),
        }
    }

    /// A command, with WebDriver's error (code, message) instead of a panic.
    async fn try_cmd(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, (String, Value)> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let v: Value = req.send().await.unwrap().json().await.unwrap();
        match v["value"]["error"].as_str() {
            Some(err) => Err((err.to_string(), v["value"]["message"].clone())),
            None => Ok(v["value"].clone()),
        }
    }

    /// Runs `source` in every page before the page's own scripts, from the
    /// next navigation on (Chrome DevTools, through chromedriver).
    pub async fn before_every_page(&self, source: &str) {
        self.cmd(
            reqwest::Method::POST,
            "/goog/cdp/execute",
            Some(json!({
                "cmd": "Page.addScriptToEvaluateOnNewDocument",
                "params": {"source": source},
            })),
        )
        .await;
    }

    pub async fn goto(&self, url: &str) {
        self.cmd(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and returns
    /// its result.
    pub async fn js(&self, script: &str, args: Value) -> Value {
        self.cmd(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
        .await
    }

    /// Waits until `script` returns something truthy; panics with `what`.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        script: &str,
        args: Value,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.js(script, args.clone()).await;
            if !(v.is_null() || v == false || v == "" || v == 0) {
                return v;
            }
            if Instant::now() > deadline {
                let name: String = what
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                    .take(60)
                    .collect();
                self.screenshot(&format!("FAILED-{name}")).await;
                panic!("timed out after {timeout:?} waiting for {what}");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits for a visible element matching `css`.
    pub async fn wait_visible(&self, css: &str, timeout: Duration) {
        self.wait_for(
            &format!("visible {css}"),
            timeout,
            "const e = document.querySelector(arguments[0]); return !!e && e.offsetParent !== null;",
            json!([css]),
        )
        .await;
    }

    async fn element(&self, css: &str) -> String {
        let v = self
            .cmd(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v[ELEMENT].as_str().unwrap().to_string()
    }

    /// A real click (through the browser's input pipeline).
    /// Clicks the element `css` names. Live updates re-render the page, so
    /// the element found can be replaced before the click lands: the
    /// selector is what is meant, so look it up again (a few times).
    pub async fn click(&self, css: &str) {
        for attempt in 1.. {
            let e = self.element(css).await;
            // Like a person, bring it to the middle of the screen first:
            // WebDriver scrolls it just into view, where on a phone the
            // page's fixed message bar may lie over it.
            self.js(
                "arguments[0].scrollIntoView({block: 'center'})",
                json!([{ (ELEMENT): e }]),
            )
            .await;
            match self
                .try_cmd(
                    reqwest::Method::POST,
                    &format!("/element/{e}/click"),
                    Some(json!({})),
                )
                .await
            {
                Ok(_) => return,
                Err((err, _)) if err == "stale element reference" && attempt < 5 => continue,
                Err((err, message)) => panic!("WebDriver click {css}: {err}: {message}"),
            }
        }
    }

    /// Types into an input (real key events).
    pub async fn type_into(&self, css: &str, text: &str) {
        let e = self.element(css).await;
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{e}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    /// Presses keys on whatever has the focus (WebDriver key actions; `keys`
    /// uses the WebDriver codes, e.g. `\u{E004}` Tab, `\u{E007}` Enter).
    pub async fn press(&self, keys: &str) {
        let actions: Vec<Value> = keys
            .chars()
            .flat_map(|c| {
                [
                    json!({"type": "keyDown", "value": c.to_string()}),
                    json!({"type": "keyUp", "value": c.to_string()}),
                ]
            })
            .collect();
        self.cmd(
            reqwest::Method::POST,
            "/actions",
            Some(json!({"actions": [{"type": "key", "id": "keyboard", "actions": actions}]})),
        )
        .await;
        self.cmd(reqwest::Method::DELETE, "/actions", None).await;
    }

    pub async fn text(&self, css: &str) -> String {
        let e = self.element(css).await;
        self.cmd(reqwest::Method::GET, &format!("/element/{e}/text"), None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Saves a PNG screenshot to the artifacts directory; returns its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let v = self.cmd(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or_default())
            .unwrap();
        let backend = format!("{:?}", crate::helpers::backend_under_test()).to_lowercase();
        let path = artifacts_dir().join(format!("{name}-{backend}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    /// Console entries that mean the page is broken: policy violations and
    /// uncaught script errors (failed requests the page handles are fine).
    pub async fn console_problems(&self) -> Vec<String> {
        let v = self
            .cmd(
                reqwest::Method::POST,
                "/se/log",
                Some(json!({"type": "browser"})),
            )
            .await;
        v.as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|e| {
                let msg = e["message"].as_str().unwrap_or_default();
                e["source"] == "security"
                    || e["source"] == "javascript"
                    || msg.contains("Content Security Policy")
                    || msg.contains("Uncaught")
            })
            .map(|e| e["message"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    pub async fn close(self) {
        let _ = self.http.delete(&self.base).send().await;
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// A TCP relay between the browser and the server that can cut the network:
/// every open connection is dropped and new ones are refused until restored.
pub struct Relay {
    pub address: String,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    cut: tokio::sync::watch::Sender<u64>,
}

impl Relay {
    pub async fn start(target: &str) -> Relay {
        use std::sync::{
            Arc,
            atomic::{AtomicBool, Ordering},
        };
        let target = target.trim_start_matches("http://").to_string();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        let up = Arc::new(AtomicBool::new(true));
        let (cut, watch) = tokio::sync::watch::channel(0u64);
        let flag = up.clone();
        actix_web::rt::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !flag.load(Ordering::SeqCst) {
                    continue; // dropped at once: "connection reset"
                }
                let target = target.clone();
                let mut watch = watch.clone();
                // Only cuts after this connection was made end it.
                watch.borrow_and_update();
                actix_web::rt::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = watch.changed() => {}
                    }
                });
            }
        });
        Relay { address, up, cut }
    }

    /// Drops every connection and refuses new ones.
    pub fn cut(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        self.cut.send_modify(|n| *n += 1);
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}
