//! Nest's wildcard patterns over RMQ (`wildcards: true`): a handler's pattern is a topic
//! binding (`user.*`, `orders.#`) and a message's routing key picks the handler.

/// Whether `pattern` has a wildcard word (`*` one word, `#` any number of words).
pub(crate) fn is_wildcard(pattern: &str) -> bool {
    pattern.split('.').any(|w| w == "*" || w == "#")
}

/// Whether routing key `key` matches topic `pattern`, as Nest's `matchRmqPattern` decides
/// it: `*` stands for exactly one word, `#` only as the last word, for one or more words
/// (and alone for every key).
pub(crate) fn matches(pattern: &str, key: &str) -> bool {
    if key.is_empty() {
        return pattern == "#";
    }
    let words: Vec<&str> = pattern.split('.').collect();
    let keys: Vec<&str> = key.split('.').collect();
    let last = words.len() - 1;
    for (i, &word) in words.iter().enumerate() {
        let key_word = keys.get(i).copied().unwrap_or("");
        if key_word.is_empty() && word.is_empty() {
            continue;
        }
        if key_word.is_empty() && word != "#" {
            return false;
        }
        if word == "#" {
            return i == last;
        }
        if word != "*" && word != key_word {
            return false;
        }
    }
    words.len() == keys.len()
}

#[cfg(test)]
mod tests {
    use super::{is_wildcard, matches};

    #[test]
    fn words_match_as_in_nest() {
        for (pattern, key, expected) in [
            ("user.*", "user.created", true),
            ("user.*", "user.created.now", false),
            ("user.*", "user", false),
            ("orders.#", "orders.eu.created", true),
            ("orders.#", "orders.eu", true),
            ("#", "anything.at.all", true),
            ("#", "", true),
            ("a.*.c", "a.b.c", true),
            ("a.*.c", "a.b.d", false),
            ("exact", "exact", true),
            ("exact", "other", false),
            ("a.#.c", "a.b.c", false),
        ] {
            assert_eq!(matches(pattern, key), expected, "{pattern} ~ {key}");
        }
        assert!(is_wildcard("user.*") && is_wildcard("#") && !is_wildcard("user.created"));
        assert!(!is_wildcard("a*b"));
    }
}
