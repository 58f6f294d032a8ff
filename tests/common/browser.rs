//! A headless Chromium driven through ChromeDriver's W3C WebDriver protocol (plain JSON over
//! HTTP on loopback, with the HTTP client the tests already use), for the dashboard's tests.
//! Without Debian's `chromium` and `chromium-driver` the test fails, saying how to install them.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

/// ChromeDriver, as Debian's `chromium-driver` installs it (or `STRATA_CHROMEDRIVER`).
fn chromedriver() -> String {
    std::env::var("STRATA_CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".to_string())
}

/// Chromium, as Debian's `chromium` installs it (or `STRATA_CHROMIUM`).
fn chromium() -> String {
    std::env::var("STRATA_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_string())
}

/// One browser session; the driver and the Chromium it started are killed when dropped.
pub struct Browser {
    driver: Child,
    http: reqwest::Client,
    session: String,
}

impl Browser {
    /// Waits until the driver on `port` is ready (`true`), or has exited (`false`).
    async fn ready(http: &reqwest::Client, base: &str, driver: &mut std::process::Child, port: u16) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if driver.try_wait().ok().flatten().is_some() {
                return false;
            }
            if let Ok(answer) = http.get(format!("{base}/status")).send().await {
                let status: Value = answer.json().await.unwrap_or_default();
                if status["value"]["ready"] == true {
                    // Ready, and still ours: a driver that failed to bind has exited by now.
                    return driver.try_wait().ok().flatten().is_none();
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "ChromeDriver did not become ready on port {port}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts ChromeDriver on a free loopback port and opens a headless session.
    pub async fn start() -> Browser {
        for (what, path, package) in [
            ("ChromeDriver", chromedriver(), "chromium-driver"),
            ("Chromium", chromium(), "chromium"),
        ] {
            assert!(
                std::path::Path::new(&path).exists(),
                "{what} is not at {path}: the dashboard's browser tests need Debian's chromium and chromium-driver \
                 (`apt-get install -y chromium chromium-driver`; .ci/run installs them), or point \
                 STRATA_CHROMIUM / STRATA_CHROMEDRIVER at them (missing package: {package})"
            );
        }
        let http = reqwest::Client::new();
        // A free port is only free until someone takes it: a driver that exits while this waits
        // for it (its port taken meanwhile, by a driver another test started) is started again on
        // another port, so that no test ever talks to another test's driver.
        // One start at a time in this process: a port picked while another driver is listening is
        // never that driver's.
        static STARTING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        let starting = STARTING.lock().await;
        let (driver, base) = loop {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|listener| listener.local_addr())
                .map(|address| address.port())
                .expect("a free loopback port");
            // In a process group of its own, so that dropping the session ends the Chromium it
            // started too (killing the driver alone leaves Chromium running).
            let mut driver = Command::new(chromedriver())
                .process_group(0)
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("ChromeDriver starts");
            let base = format!("http://127.0.0.1:{port}");
            if Self::ready(&http, &base, &mut driver, port).await {
                break (driver, base);
            }
        };
        drop(starting);
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium(),
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1360,1500"],
            },
        }}});
        let created: Value = http
            .post(format!("{base}/session"))
            .json(&capabilities)
            .send()
            .await
            .expect("a session")
            .json()
            .await
            .expect("a session's answer");
        let session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("ChromeDriver opened no session: {created}"))
            .to_string();
        Browser {
            driver,
            http,
            session: format!("{base}/session/{session}"),
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.http.request(method, format!("{}{path}", self.session));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request
            .send()
            .await
            .expect("ChromeDriver answers")
            .json()
            .await
            .unwrap_or_default();
        answer["value"].clone()
    }

    /// Opens `url` and waits for its load.
    pub async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    /// Runs `script` in the page (its `return` value back as JSON).
    pub async fn execute(&self, script: &str) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
        .await
    }

    /// The visible text of the first element `selector` matches, if one does.
    pub async fn text(&self, selector: &str) -> Option<String> {
        let script = format!(
            "const found = document.querySelector({}); return found ? found.innerText : null;",
            json!(selector)
        );
        self.execute(&script).await.as_str().map(str::to_string)
    }

    /// Waits (bounded) until the text of `selector` satisfies `wanted`, without reloading the
    /// page; returns it. The page changes on its own (the events it follows), so this polls it.
    pub async fn wait_for_text(&self, selector: &str, what: &str, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let text = self.text(selector).await;
            if let Some(text) = &text {
                if wanted(text) {
                    return text.clone();
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the page never showed {what} at {selector} (it shows {text:?})"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Types `text` into the field `selector` names and submits its form.
    pub async fn submit(&self, selector: &str, text: &str) {
        let script = format!(
            "const field = document.querySelector({}); field.value = {}; field.form.requestSubmit(); return true;",
            json!(selector),
            json!(text)
        );
        assert_eq!(self.execute(&script).await, true, "no field {selector}");
    }

    /// A PNG screenshot of the page.
    pub async fn screenshot(&self) -> Vec<u8> {
        use base64::Engine as _;
        let encoded = self.call(reqwest::Method::GET, "/screenshot", None).await;
        base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().expect("a screenshot"))
            .expect("a screenshot in base64")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the process group this session's driver leads (see `start`).
        unsafe { libc::kill(-(self.driver.id() as libc::pid_t), libc::SIGKILL) };
        let _ = self.driver.wait();
    }
}
