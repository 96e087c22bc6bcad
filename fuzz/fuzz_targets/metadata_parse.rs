//! Metadata-service strings from outside: `MetadataUri::parse` (the `--metadata_server`
//! connection string), `keys::unescape` (the `?key=` query value the HTTP metadata server
//! decodes), `keys::escape`, `KeySpace` and `AuthToken::new` (`--auth_token`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mooncake_metadata::keys::{escape, unescape, KeySpace};
use mooncake_metadata::{AuthToken, MetadataUri, MAX_TOKEN_LEN};

fuzz_target!(|data: &[u8]| {
    // Percent-decoding takes any text, valid UTF-8 or not once decoded.
    let lossy = String::from_utf8_lossy(data);
    if let Some(k) = unescape(&lossy) {
        let e = escape(&k);
        assert_eq!(unescape(&e).as_deref(), Some(k.as_str()));
    }
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    // escape is the inverse of unescape on every key.
    assert_eq!(unescape(&escape(s)).as_deref(), Some(s));
    assert!(escape(s)
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(&b)));

    if let Ok(uri) = MetadataUri::parse(s) {
        let shown = uri.to_string();
        let again = MetadataUri::parse(&shown).expect("a parsed URI's text parses again");
        assert_eq!(again, uri);
    }

    let space = KeySpace::with_cluster_id(s);
    assert!(space.prefix().ends_with('/'));
    assert!(space.segment(s).starts_with(space.prefix()));
    assert!(space.rpc_meta(s).starts_with(space.prefix()));

    match AuthToken::new(s) {
        Ok(Some(t)) => {
            assert!(s.len() <= MAX_TOKEN_LEN);
            assert!(t.matches(s.as_bytes()));
            assert!(AuthToken::admits(Some(&t), Some(s.as_bytes())));
            let mut other = s.as_bytes().to_vec();
            other.push(b'x');
            assert!(!t.matches(&other));
        }
        Ok(None) => assert!(s.is_empty()),
        Err(_) => assert!(!s.is_empty()),
    }
});
