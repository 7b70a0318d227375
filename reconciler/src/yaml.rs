//! YAML for everything Vane reads as YAML (manifests, DVC pointers, model configs), with input budgets.
//!
//! serde-saphyr replaces serde_yaml 0.9 (deprecated and unmaintained upstream). Besides the byte limits callers
//! apply, a document meets a budget while it is parsed: nesting depth, events, nodes, anchors and aliases (an alias
//! bomb's replayed events are bounded too), scalar bytes, one document. Errors name the line and column.

use serde::de::DeserializeOwned;

/// The budget of one document. A manifest is at most 256 KiB and a few hundred nodes; these are far above any real
/// one and far below what would cost memory or time.
fn options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_depth: 32,
            max_events: 200_000,
            max_nodes: 100_000,
            max_anchors: 256,
            max_aliases: 256,
            max_documents: 1,
            max_total_scalar_bytes: 4 << 20,
            max_merge_keys: 256,
        },
        alias_limits: serde_saphyr::alias_limits! {
            max_total_replayed_events: 20_000,
            max_replay_stack_depth: 16,
        },
        with_snippet: false,
    }
}

/// Parses `text` (one document) into `T`.
pub fn from_str<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    serde_saphyr::from_str_with_options(text, options()).map_err(|e| e.to_string())
}

/// Parses `bytes` (UTF-8, one document) into `T`.
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"))?;
    from_str(text)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Small {
        name: String,
        #[serde(default)]
        tags: Vec<String>,
    }

    #[test]
    fn unknown_fields_are_refused_naming_the_line() {
        let error = super::from_str::<Small>("name: a\ncolour: red\n").unwrap_err();
        assert!(error.contains("unknown field `colour`") && error.contains("line 2"), "{error}");
    }

    #[test]
    fn an_alias_bomb_and_deep_nesting_are_refused_by_the_budget() {
        // The billion laughs: each level refers to the one below nine times.
        let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x]\n");
        for level in 1..10 {
            let below = format!("*a{}", level - 1);
            bomb.push_str(&format!("a{level}: &a{level} [{}]\n", [below.as_str(); 9].join(", ")));
        }
        let error = super::from_str::<BTreeMap<String, serde_json::Value>>(&bomb).unwrap_err();
        assert!(error.to_lowercase().contains("budget") || error.contains("alias"), "{error}");
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert!(super::from_str::<serde_json::Value>(&deep).is_err());
        assert!(super::from_str::<serde_json::Value>("a: 1\n---\nb: 2\n").is_err(), "one document");
    }
}
