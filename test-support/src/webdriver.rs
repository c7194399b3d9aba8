//! Just enough of the W3C WebDriver protocol to drive a headless browser from a test: a
//! session, navigation, scripts, typing, clicking and screenshots, as JSON over plain
//! HTTP/1.1 to a local chromedriver. (A WebDriver crate would do the same with a hundred more
//! crates to build, the Unicode segmentation tables among them.)

use serde_json::{Value, json};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One browser session on the chromedriver at `127.0.0.1:port`.
pub struct Browser {
    port: u16,
    session: String,
}

/// The W3C name of the key that identifies an element in a reply.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

async fn request(port: u16, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.map_err(|e| format!("connect: {e}"))?;
    let body = body.map(Value::to_string).unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.map_err(|e| e.to_string())?;
    s.write_all(body.as_bytes()).await.map_err(|e| e.to_string())?;
    // The answer ends where its Content-Length (or its last chunk) says: chromedriver may keep
    // the connection open.
    let mut raw = Vec::new();
    let read = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = s.read(&mut buf).await.map_err(|e| e.to_string())?;
            raw.extend_from_slice(&buf[..n]);
            if n == 0 || crate::wire::complete(&raw) {
                return Ok::<(), String>(());
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), read).await.map_err(|_| format!("{method} {path}: no answer"))??;
    let text = String::from_utf8_lossy(&raw);
    let (head, rest) = text.split_once("\r\n\r\n").ok_or("not HTTP")?;
    let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
    let body = if chunked { crate::wire::dechunk(rest) } else { rest.to_string() };
    let reply: Value = serde_json::from_str(&body).map_err(|e| format!("{method} {path}: {e}: {body}"))?;
    match reply["value"].get("error") {
        Some(error) => Err(format!("{method} {path}: {error}: {}", reply["value"]["message"])),
        None => Ok(reply["value"].clone()),
    }
}

impl Browser {
    /// A new session with these `goog:chromeOptions`.
    pub async fn start(port: u16, chrome_options: Value) -> Result<Browser, String> {
        let caps = json!({ "capabilities": { "alwaysMatch": { "browserName": "chrome", "goog:chromeOptions": chrome_options } } });
        let value = request(port, "POST", "/session", Some(&caps)).await?;
        let session = value["sessionId"].as_str().ok_or(format!("no session id in {value}"))?.to_string();
        Ok(Browser { port, session })
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        request(self.port, method, &format!("/session/{}{path}", self.session), body.as_ref()).await
    }

    pub async fn goto(&self, url: &str) -> Result<(), String> {
        self.call("POST", "/url", Some(json!({ "url": url }))).await.map(drop)
    }

    /// Reloads the page (a new load of the same URL, its fragment kept).
    pub async fn refresh(&self) -> Result<(), String> {
        self.call("POST", "/refresh", Some(json!({}))).await.map(drop)
    }

    /// Resizes the browser's window (the screenshot is of its viewport).
    pub async fn set_window_size(&self, width: u32, height: u32) -> Result<(), String> {
        self.call("POST", "/window/rect", Some(json!({ "width": width, "height": height }))).await.map(drop)
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and answers what it returns.
    pub async fn execute(&self, script: &str, args: Vec<Value>) -> Result<Value, String> {
        self.call("POST", "/execute/sync", Some(json!({ "script": script, "args": args }))).await
    }

    /// The first element a CSS selector or an XPath finds (`using`: "css selector" or "xpath").
    pub async fn find(&self, using: &str, value: &str) -> Result<String, String> {
        let found = self.call("POST", "/element", Some(json!({ "using": using, "value": value }))).await?;
        found[ELEMENT].as_str().map(str::to_string).ok_or(format!("no element for {value}: {found}"))
    }

    pub async fn click(&self, element: &str) -> Result<(), String> {
        self.call("POST", &format!("/element/{element}/click"), Some(json!({}))).await.map(drop)
    }

    pub async fn type_into(&self, element: &str, text: &str) -> Result<(), String> {
        self.call("POST", &format!("/element/{element}/value"), Some(json!({ "text": text }))).await.map(drop)
    }

    /// The messages the browser's console received since the last call (chromedriver's log
    /// endpoint: errors, CSP refusals among them, are kept by default).
    pub async fn console_log(&self) -> Result<Vec<String>, String> {
        let entries = self.call("POST", "/se/log", Some(json!({ "type": "browser" }))).await?;
        let messages =
            entries.as_array().map(|all| all.iter().filter_map(|e| e["message"].as_str()).map(str::to_string));
        Ok(messages.map(Iterator::collect).unwrap_or_default())
    }

    /// A PNG of the viewport.
    pub async fn screenshot(&self) -> Result<Vec<u8>, String> {
        use base64_lite::decode;
        let value = self.call("GET", "/screenshot", None).await?;
        decode(value.as_str().ok_or("no screenshot")?)
    }

    pub async fn quit(self) -> Result<(), String> {
        self.call("DELETE", "", None).await.map(drop)
    }
}

/// Standard base64 decoding, for the screenshot (the one place the protocol uses it).
mod base64_lite {
    pub fn decode(text: &str) -> Result<Vec<u8>, String> {
        let value = |c: u8| -> Result<u32, String> {
            Ok(match c {
                b'A'..=b'Z' => c - b'A',
                b'a'..=b'z' => c - b'a' + 26,
                b'0'..=b'9' => c - b'0' + 52,
                b'+' => 62,
                b'/' => 63,
                _ => return Err(format!("not base64: {:?}", c as char)),
            } as u32)
        };
        let bytes: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace() && *b != b'=').collect();
        let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
        for chunk in bytes.chunks(4) {
            let mut n = 0u32;
            for (i, &c) in chunk.iter().enumerate() {
                n |= value(c)? << (18 - 6 * i);
            }
            let take = chunk.len() - 1;
            out.extend_from_slice(&n.to_be_bytes()[1..=take]);
        }
        Ok(out)
    }
}
