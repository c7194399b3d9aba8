//! The operator kit in `contrib/` against a real console: every `redis_breaker_*` metric that
//! the Prometheus rules, their unit tests and the Grafana dashboard query is in a scrape of
//! `/metrics`, with the labels and label values they match on; and the dashboard's queries
//! parse as PromQL (`promtool check rules`). A renamed series or a typo in the kit fails here,
//! where otherwise a panel would stay empty and an alert would never fire.

use super::console::{Console, spawn_console};
use redis_breaker::{Client, Config, State};
use redis_breaker_test_support as support;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const RULES: &str = "prometheus/redis-breaker.rules.yml";
const RULE_TESTS: &str = "prometheus/redis-breaker.rules.test.yml";
const DASHBOARD: &str = "grafana/redis-breaker.json";

fn contrib(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../contrib").join(file)
}

fn read(file: &str) -> String {
    std::fs::read_to_string(contrib(file)).unwrap_or_else(|e| panic!("contrib/{file}: {e}"))
}

/// Starts the console on a free loopback port, read-only, under the default prefix.
fn console(redis: &TestRedis, extra: &[&str]) -> Console {
    let mut c = Command::new(env!("CARGO_BIN_EXE_redis-breaker"));
    c.env("REDIS_URL", &redis.url).env_remove("REDIS_BREAKER_TOKEN").env_remove("REDIS_BREAKER_PREFIX");
    c.args(["serve", "--listen", "127.0.0.1:0"]).args(extra);
    spawn_console(c)
}

/// A webhook receiver on a free loopback port that accepts every POST (200), for the
/// notifier's series; its thread ends with the test binary.
fn receiver() -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a receiver");
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for mut stream in listener.incoming().map_while(Result::ok) {
            let mut raw = Vec::new();
            let mut buf = [0; 4096];
            while !support::wire::complete(&raw) {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => raw.extend_from_slice(&buf[..n]),
                }
            }
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    url
}

async fn scrape(c: &Console) -> String {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", c.port)).await.expect("connect to the console");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut raw)).await.expect("an answer").unwrap();
    let text = String::from_utf8(raw).expect("a UTF-8 answer");
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        support::wire::dechunk(body)
    } else {
        body.to_string()
    }
}

/// What a scrape holds: each sample name (as Prometheus stores it: a counter's samples end in
/// `_total`, its `# TYPE` line does not) with each label name and the values seen.
type Seen = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

fn seen(exposition: &str) -> Seen {
    let mut out = Seen::new();
    for line in exposition.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let mut chars = line.chars().peekable();
        let name: String = std::iter::from_fn(|| chars.next_if(|c| *c != '{' && *c != ' ')).collect();
        let labels = out.entry(name).or_default();
        if chars.next() == Some('{') {
            for (label, _, value) in matchers(&mut chars) {
                labels.entry(label).or_default().insert(value);
            }
        }
    }
    out
}

/// A selector's matchers after its `{`, up to and with its `}`: label, operator, value (quotes
/// and escapes removed).
fn matchers(chars: &mut std::iter::Peekable<impl Iterator<Item = char>>) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    loop {
        while chars.next_if(|c| c.is_whitespace() || *c == ',').is_some() {}
        if chars.next_if_eq(&'}').is_some() || chars.peek().is_none() {
            return out;
        }
        let label: String = std::iter::from_fn(|| chars.next_if(|c| c.is_alphanumeric() || *c == '_')).collect();
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let op: String = std::iter::from_fn(|| chars.next_if(|c| "=!~".contains(*c))).collect();
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let quote = chars.next().unwrap_or('"');
        let mut value = String::new();
        while let Some(c) = chars.next().filter(|c| *c != quote) {
            value.push(match c {
                '\\' => match chars.next() {
                    Some('n') => '\n',
                    Some(other) => other,
                    None => break,
                },
                c => c,
            });
        }
        out.push((label, op, value));
    }
}

/// One use of a `redis_breaker_*` metric in the kit: where, the name, its selector's matchers.
struct Use {
    place: String,
    metric: String,
    matchers: Vec<(String, String, String)>,
}

/// Every `redis_breaker_*` metric named in a PromQL query (or a promtool test's series).
fn uses(place: &str, query: &str) -> Vec<Use> {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut out = Vec::new();
    for (at, _) in query.match_indices("redis_breaker_") {
        if query[..at].chars().next_back().is_some_and(ident) {
            continue;
        }
        let rest = &query[at..];
        let end = rest.find(|c: char| !ident(c)).unwrap_or(rest.len());
        let mut after = rest[end..].trim_start().chars().peekable();
        let matchers = if after.next_if_eq(&'{').is_some() { matchers(&mut after) } else { Vec::new() };
        out.push(Use { place: place.to_string(), metric: rest[..end].to_string(), matchers });
    }
    out
}

/// The queries of a Prometheus rules file or promtool test file, by a line scan: the value of
/// each `expr:` and `series:`, with the indented lines of a block (`expr: |`).
fn yaml_queries(file: &str) -> Vec<(String, String)> {
    let text = read(file);
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start().trim_start_matches("- ");
        let Some(value) = trimmed.strip_prefix("expr:").or_else(|| trimmed.strip_prefix("series:")) else {
            continue;
        };
        let key_column = line.len() - trimmed.len();
        let value = value.trim();
        let query = if value.starts_with(['|', '>']) {
            let block = lines[i + 1..].iter().take_while(|l| l.trim().is_empty() || indent(l) > key_column);
            block.copied().collect::<Vec<_>>().join("\n")
        } else if let Some(quoted) = value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
            quoted.replace("''", "'")
        } else {
            value.trim_matches('"').to_string()
        };
        out.push((format!("contrib/{file}:{}", i + 1), query));
    }
    out
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// The dashboard's queries: each target's `expr` and each template variable's query, with the
/// title of the panel (or the variable's name) they belong to.
fn dashboard_queries() -> Vec<(String, String)> {
    fn walk(v: &serde_json::Value, place: &str, out: &mut Vec<(String, String)>) {
        match v {
            serde_json::Value::Object(map) => {
                let named = map.get("title").or_else(|| map.get("name")).and_then(|t| t.as_str());
                let place = named.map_or(place.to_string(), |t| format!("contrib/{DASHBOARD} ({t})"));
                for (key, value) in map {
                    match (key.as_str(), value.as_str()) {
                        ("expr" | "query" | "definition", Some(query)) => out.push((place.clone(), query.to_string())),
                        _ => walk(value, &place, out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|i| walk(i, place, out)),
            _ => {}
        }
    }
    let dashboard: serde_json::Value =
        serde_json::from_str(&read(DASHBOARD)).unwrap_or_else(|e| panic!("contrib/{DASHBOARD} is no JSON: {e}"));
    let mut out = Vec::new();
    walk(&dashboard, &format!("contrib/{DASHBOARD}"), &mut out);
    out
}

/// What is wrong with a use against a scrape: a name it lacks, a label its samples do not
/// carry, or a label value they never take. `job` and `instance` are Prometheus's target
/// labels (not in the scrape); breaker names are examples; Grafana variables (`$breaker`) and
/// regexes beyond `a|b` are not checked.
fn problems(u: &Use, scrape: &Seen) -> Vec<String> {
    let Some(labels) = scrape.get(&u.metric) else {
        return vec![format!("{}: {} is not in the scrape", u.place, u.metric)];
    };
    let mut out = Vec::new();
    for (label, op, value) in u.matchers.iter().filter(|(l, _, _)| l != "job" && l != "instance") {
        let Some(values) = labels.get(label) else {
            out.push(format!("{}: {} has no label {label:?}", u.place, u.metric));
            continue;
        };
        if label == "breaker" {
            continue;
        }
        let literal = |v: &str| v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        let alternatives: Vec<&str> = match op.as_str() {
            "=" if !value.contains('$') => vec![value],
            "=~" if value.split('|').all(literal) => value.split('|').collect(),
            _ => continue,
        };
        for wanted in alternatives {
            if !values.contains(wanted) {
                out.push(format!(
                    "{}: {}{{{label}={wanted:?}}} is not in the scrape (seen: {values:?})",
                    u.place, u.metric
                ));
            }
        }
    }
    out
}

const HOW_TO_GET_PROMTOOL: &str = "promtool is not installed: this test has Prometheus's own parser check \
    the dashboard's queries. Install it (Debian/Ubuntu: `apt-get install -y prometheus`; elsewhere: \
    promtool from https://prometheus.io/download/ on PATH) and run the test again";

/// The dashboard's queries, Grafana's variables given example values, as recording rules that
/// `promtool check rules` parses.
fn promtool_parses(queries: &[(String, String)]) {
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, (_, query)) in queries.iter().filter(|(_, q)| !q.starts_with("label_values(")).enumerate() {
        let mut query = query.replace("$__rate_interval", "5m");
        for variable in ["$job", "$instance", "$breaker"] {
            query = query.replace(variable, "x");
        }
        rules += &format!("      - record: dashboard:query:{i}\n        expr: {}\n", serde_json::Value::from(query));
    }
    let path = std::env::temp_dir().join(format!("redis-breaker-dashboard-{}.rules.yml", std::process::id()));
    std::fs::write(&path, &rules).unwrap();
    let out = match Command::new("promtool").args(["check", "rules"]).arg(&path).output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!("{HOW_TO_GET_PROMTOOL}"),
        Err(e) => panic!("cannot run promtool: {e}"),
    };
    let _ = std::fs::remove_file(&path);
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool refused a query of the dashboard: {said}\n--- as rules:\n{rules}");
}

#[tokio::test]
async fn every_metric_the_rules_and_the_dashboard_query_is_in_a_real_scrape() {
    let mut queries = yaml_queries(RULES);
    let from_rules = queries.len();
    queries.extend(yaml_queries(RULE_TESTS));
    let from_tests = queries.len() - from_rules;
    let dashboard = dashboard_queries();
    promtool_parses(&dashboard);
    queries.extend(dashboard);
    let all: Vec<Use> = queries.iter().flat_map(|(place, q)| uses(place, q)).collect();
    for (file, n) in [(RULES, from_rules), (RULE_TESTS, from_tests)] {
        assert!(n > 0 && all.iter().any(|u| u.place.contains(file)), "the scan found no query in contrib/{file}");
    }
    assert!(all.iter().any(|u| u.place.contains(DASHBOARD)), "the scan found no query in contrib/{DASHBOARD}");

    // Every kind of series the kit reads: calls of each outcome, rejected calls, an open
    // breaker, one forced open with no end, each of the console's alert kinds that the kit
    // matches on (flapping: any open, under --alert-flaps 0; drift: two configs), and the
    // notifier's counters (a receiver given with --notify).
    let redis = private_redis().await;
    let (one, two) = (Client::connect(&redis.url).await.unwrap(), Client::connect(&redis.url).await.unwrap());
    let tripped = one
        .breaker(
            &unique("contrib-tripped"),
            Config::builder()
                .failure_threshold(2)
                .base_recovery(Duration::from_secs(300))
                .call_timeout(Duration::from_millis(100))
                .build()
                .unwrap(),
        )
        .unwrap();
    tripped.execute(|| async { Ok::<(), ()>(()) }).await.unwrap();
    let _ = tripped.execute(|| async { Err::<(), _>("down") }).await;
    let _ = tripped
        .execute(|| async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            Ok::<(), ()>(())
        })
        .await;
    assert_eq!(tripped.state(), State::Open, "a failure and a timeout open it");
    assert!(tripped.execute(|| async { Ok::<(), ()>(()) }).await.is_err(), "rejected");
    one.breaker(&unique("contrib-forced"), Config::default()).unwrap().force_open(None).await.unwrap();
    let drift = unique("contrib-drift");
    let config = |recovery| Config::builder().failure_threshold(1).base_recovery(recovery).build().unwrap();
    let a = one.breaker(&drift, config(Duration::from_secs(60))).unwrap();
    let _ = a.execute(|| async { Err::<(), _>("down") }).await;
    a.reset().await.unwrap();
    let b = two.breaker(&drift, config(Duration::from_secs(90))).unwrap();
    let _ = b.execute(|| async { Err::<(), _>("down") }).await;
    one.flush().await.unwrap();
    two.flush().await.unwrap();
    let hook = receiver();
    let c = console(&redis, &["--alert-flaps", "0", "--alert-open", "1s", "--notify", &hook]);

    // The console's history alerts may come after its first read.
    let started = Instant::now();
    loop {
        let text = scrape(&c).await;
        let scrape = seen(&text);
        let mut wrong: Vec<String> = all.iter().flat_map(|u| problems(u, &scrape)).collect();
        wrong.dedup();
        if wrong.is_empty() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the kit queries what the console does not serve:\n{}\n--- the scrape:\n{text}",
            wrong.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
