//! A real headless Chromium, driven over WebDriver (Debian's `chromium` and
//! `chromium-driver`; `scripts/setup.sh --tests` installs them as root). The protocol is
//! plain HTTP with JSON, spoken here with reqwest.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

/// Starts chromedriver on a free port; the port once it says it is listening (within 20 s),
/// or `None` and everything it printed.
fn start_driver() -> (Child, Option<String>, String) {
    let mut driver = Command::new("chromedriver")
        .arg("--port=0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start chromedriver ({e}): install Debian's chromium-driver (scripts/setup.sh --tests does, as root)")
        });
    let output = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let streams: [Box<dyn std::io::Read + Send>; 2] = [
        Box::new(driver.stdout.take().expect("stdout")),
        Box::new(driver.stderr.take().expect("stderr")),
    ];
    for stream in streams {
        let (tx, output) = (tx.clone(), output.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("started successfully on port ").nth(1) {
                    let _ = tx.send(rest.trim_end_matches('.').trim().to_owned());
                }
                if let Ok(mut o) = output.lock() {
                    o.push_str(&line);
                    o.push('\n');
                }
            }
        });
    }
    drop(tx);
    let port = rx.recv_timeout(Duration::from_secs(20)).ok();
    if port.is_none() {
        let _ = driver.kill();
        let status = driver.wait().ok();
        if let Ok(mut o) = output.lock() {
            o.push_str(&format!("(exit: {status:?})"));
        }
    }
    let said = output.lock().map(|o| o.clone()).unwrap_or_default();
    (driver, port, said)
}

/// One browser session; dropping it ends the session and the driver.
#[derive(Debug)]
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
}

fn find_chromium() -> String {
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        for dir in std::env::var("PATH").unwrap_or_default().split(':') {
            let path = std::path::Path::new(dir).join(name);
            if path.is_file() {
                return path.display().to_string();
            }
        }
    }
    panic!(
        "no chromium on PATH: install Debian's chromium and chromium-driver (scripts/setup.sh --tests does, as root)"
    );
}

impl Browser {
    /// Starts chromedriver on a free port and a headless Chromium of `width` x `height`.
    pub async fn start(width: u32, height: u32) -> Self {
        let chromium = find_chromium();
        // chromedriver has been seen to exit at start now and then; it gets three tries,
        // and what it said goes into the failure.
        let mut said = Vec::new();
        let (driver, port) = 'started: {
            for _ in 0..3 {
                let (driver, port, output) = start_driver();
                if let Some(port) = port {
                    break 'started (driver, port);
                }
                said.push(output);
            }
            panic!(
                "chromedriver did not start in three tries; it said:\n{}",
                said.join("\n---\n")
            );
        };
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client");
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--no-first-run",
                         format!("--window-size={width},{height}")]
            },
            "goog:loggingPrefs": {"browser": "ALL"}
        }}});
        let created: Value = http
            .post(format!("{base}/session"))
            .json(&capabilities)
            .send()
            .await
            .expect("chromedriver answers")
            .json()
            .await
            .expect("json");
        let session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no browser session: {created}"))
            .to_owned();
        let browser = Self {
            driver,
            base,
            session,
            http,
        };
        browser.resize(width, height).await;
        browser
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        self.try_call(method, path, body)
            .await
            .unwrap_or_else(|error| panic!("WebDriver {path}: {error}"))
    }

    /// A WebDriver call; its error object when it fails.
    async fn try_call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Value,
    ) -> Result<Value, Value> {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut request = self.http.request(method, url);
        if !body.is_null() {
            request = request.json(&body);
        }
        let response: Value = request
            .send()
            .await
            .expect("chromedriver answers")
            .json()
            .await
            .expect("json");
        if response["value"].get("error").is_some() {
            return Err(response["value"].clone());
        }
        Ok(response["value"].clone())
    }

    /// Opens `url`.
    pub async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", json!({ "url": url }))
            .await;
    }

    /// Sets the window's size (the page's viewport follows).
    pub async fn resize(&self, width: u32, height: u32) {
        self.call(
            reqwest::Method::POST,
            "/window/rect",
            json!({"width": width, "height": height}),
        )
        .await;
    }

    /// Runs `script` (a function body; `return` gives the value) in the page.
    pub async fn eval(&self, script: &str) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            json!({"script": script, "args": []}),
        )
        .await
    }

    /// Polls `script` every 50 ms until it returns true, for at most `limit`; the time it
    /// took, or a panic naming `what` and the script's last value.
    pub async fn until(&self, what: &str, limit: Duration, script: &str) -> Duration {
        let started = Instant::now();
        loop {
            let v = self.eval(script).await;
            if v == Value::Bool(true) {
                return started.elapsed();
            }
            if started.elapsed() > limit {
                panic!("{what}: not within {limit:?} (last value {v})");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Clicks the element `css` selects, and types `text` into it as keystrokes (after
    /// clearing it); `\u{E007}` is Enter.
    ///
    /// A live page may draw the element anew between finding it and typing (the console
    /// redraws a form nobody is typing in with every frame): then it is found again, up to
    /// ten times.
    pub async fn type_into(&self, css: &str, text: &str) {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let found = self
                .call(
                    reqwest::Method::POST,
                    "/element",
                    json!({"using": "css selector", "value": css}),
                )
                .await;
            let id = found
                .as_object()
                .and_then(|o| o.values().next())
                .and_then(Value::as_str)
                .unwrap_or_else(|| panic!("no element {css}: {found}"))
                .to_owned();
            let typed = async {
                self.try_call(
                    reqwest::Method::POST,
                    &format!("/element/{id}/clear"),
                    json!({}),
                )
                .await?;
                self.try_call(
                    reqwest::Method::POST,
                    &format!("/element/{id}/value"),
                    json!({ "text": text }),
                )
                .await
            };
            match typed.await {
                Ok(_) => return,
                // A redraw between the driver's steps (found, scrolled to, checked) shows
                // as either error: the element it holds is gone from the page.
                Err(e)
                    if attempts < 10
                        && (e["error"] == "stale element reference"
                            || e["error"] == "element not interactable") =>
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                Err(e) => panic!("WebDriver typing into {css}: {e}"),
            }
        }
    }

    /// The page as a PNG.
    pub async fn screenshot(&self) -> Vec<u8> {
        let data = self
            .call(reqwest::Method::GET, "/screenshot", Value::Null)
            .await;
        base64::engine::general_purpose::STANDARD
            .decode(data.as_str().expect("base64 text"))
            .expect("a PNG")
    }

    /// The browser console's messages at level SEVERE (errors) since the last call.
    pub async fn console_errors(&self) -> Vec<String> {
        let logs = self
            .call(reqwest::Method::POST, "/se/log", json!({"type": "browser"}))
            .await;
        logs.as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["level"] == "SEVERE")
            .map(|e| e["message"].as_str().unwrap_or_default().to_owned())
            .collect()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // End the session first, so that the driver closes Chromium (a killed driver
        // would leave it running).
        use std::io::{Read as _, Write as _};
        let host = self.base.trim_start_matches("http://");
        if let Ok(mut s) = std::net::TcpStream::connect(host) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            let _ = write!(
                s,
                "DELETE /session/{} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                self.session
            );
            let mut sink = Vec::new();
            let _ = s.read_to_end(&mut sink);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
