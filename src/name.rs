//! Breaker names and the Redis keys built from them (the one place keys are named).

use crate::error::ConfigError;

/// Longest breaker name, in bytes.
pub const MAX_NAME_LEN: usize = 200;

fn allowed_byte(b: u8) -> bool {
    b.is_ascii_graphic() && !matches!(b, b'{' | b'}' | b'*')
}

/// Checks a breaker name: 1-200 bytes of printable ASCII, no whitespace, `{`, `}` or `*`.
///
/// # Errors
/// [`ConfigError::Name`] saying which rule the name breaks.
pub fn validate_name(name: &str) -> Result<(), ConfigError> {
    let refuse = |reason: String| {
        let shown: String = name.chars().take(60).collect();
        Err(ConfigError::Name { name: shown, reason })
    };
    const RULE: &str = "a name is 1-200 bytes of printable ASCII with no whitespace, `{`, `}` or `*`";
    if name.is_empty() {
        return refuse(format!("it is empty; {RULE}"));
    }
    if name.len() > MAX_NAME_LEN {
        return refuse(format!("it is {} bytes long; {RULE}", name.len()));
    }
    if let Some(c) = name.chars().find(|c| !c.is_ascii() || !allowed_byte(*c as u8)) {
        return refuse(format!("it contains {c:?}; {RULE}"));
    }
    Ok(())
}

pub(crate) fn valid_prefix(prefix: &str) -> bool {
    !prefix.is_empty() && prefix.len() <= 100 && prefix.bytes().all(allowed_byte)
}

/// The seven keys of one breaker, in the order every script takes them.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    pub(crate) name: String,
    pub(crate) all: [String; 7],
    /// The breaker's own events channel, in its slot: `<prefix>:{<name>}:events` (sharded
    /// pub/sub on Redis Cluster).
    pub(crate) shard_channel: String,
}

impl Keys {
    pub(crate) fn new(prefix: &str, name: &str) -> Keys {
        let key = |suffix: &str| format!("{prefix}:{{{name}}}:{suffix}");
        Keys {
            name: name.to_string(),
            all: [
                key("state"),
                key("probes"),
                key("window"),
                key("metrics"),
                key("history"),
                key("reporters"),
                key("processes"),
            ],
            shard_channel: key("events"),
        }
    }

    pub(crate) fn state(&self) -> &str {
        &self.all[0]
    }

    /// The history stream: the last transitions, with reasons and operators' notes.
    pub(crate) fn history(&self) -> &str {
        &self.all[4]
    }
}

/// The pub/sub channel of a prefix's transitions.
pub(crate) fn events_channel(prefix: &str) -> String {
    format!("{prefix}:events")
}

/// The breaker a state or metrics key belongs to (a breaker that never left closed has only
/// its metrics), or `None` for any other key.
pub(crate) fn name_from_listed_key<'k>(prefix: &str, key: &'k str) -> Option<&'k str> {
    let inner = key.strip_prefix(prefix)?.strip_prefix(":{")?;
    inner.strip_suffix("}:state").or_else(|| inner.strip_suffix("}:metrics"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_one_hash_tag() {
        let k = Keys::new("breaker", "payments");
        assert_eq!(k.all[0], "breaker:{payments}:state");
        assert_eq!(k.all[1], "breaker:{payments}:probes");
        assert_eq!(k.all[2], "breaker:{payments}:window");
        assert_eq!(k.all[3], "breaker:{payments}:metrics");
        assert_eq!(name_from_listed_key("breaker", &k.all[0]), Some("payments"));
        assert_eq!(name_from_listed_key("breaker", &k.all[3]), Some("payments"));
        assert_eq!(name_from_listed_key("breaker", &k.all[1]), None, "probes alone name no breaker");
        assert_eq!(name_from_listed_key("breaker", "breaker:events"), None);
    }

    #[test]
    fn hostile_names_are_refused_with_the_rule() {
        let long = "a".repeat(201);
        for bad in ["", long.as_str(), "a b", "a{b", "a}b", "a*b", "a\nb", "café", "tab\t"] {
            let err = validate_name(bad).expect_err(bad);
            assert!(err.to_string().contains("printable ASCII"), "{err}");
        }
        assert!(validate_name(&"a".repeat(200)).is_ok());
        assert!(validate_name("payments-v2.eu:primary").is_ok());
    }
}
