//! Sizes as Mooncake's command lines, config files and Python `setup` dicts write them:
//! `4294967296`, `"4 GB"`, `512MB`, `1.5 GiB`. Units are binary whatever their spelling
//! (`GB` = `GiB` = 2^30, as Mooncake reads them); the one parser every entry point uses.

/// Why a size could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseSizeError {
    /// No number where the size should start.
    #[error("{0:?} is not a size (e.g. 4294967296, \"4 GB\", 512MB)")]
    NotASize(String),
    /// A unit other than B, K/KB/KiB, M/MB/MiB, G/GB/GiB, T/TB/TiB.
    #[error("{0:?} has an unknown size unit {1:?} (use B, KB, MB, GB or TB)")]
    UnknownUnit(String, String),
    /// Negative, not finite, or more than 2^64 - 1 bytes.
    #[error("{0:?} is out of range")]
    OutOfRange(String),
}

/// Reads a size: a number (fractions allowed), optional spaces, an optional unit, the
/// whole optionally in double quotes (as YAML and shell quoting leave it).
///
/// # Errors
/// [`ParseSizeError`] naming the text and what is wrong with it.
pub fn parse_size(text: &str) -> Result<u64, ParseSizeError> {
    let t = text.trim();
    let t = t
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(t)
        .trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| ParseSizeError::NotASize(text.to_owned()))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        other => {
            return Err(ParseSizeError::UnknownUnit(
                text.to_owned(),
                other.to_owned(),
            ))
        }
    };
    #[allow(clippy::cast_precision_loss)]
    let v = n * mult as f64;
    #[allow(clippy::cast_precision_loss)]
    if !v.is_finite() || v < 0.0 || v >= u64::MAX as f64 {
        return Err(ParseSizeError::OutOfRange(text.to_owned()));
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Ok(v as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_like_mooncake() {
        assert_eq!(parse_size("4 GB"), Ok(4 << 30));
        assert_eq!(parse_size("\"2 GB\""), Ok(2 << 30));
        assert_eq!(parse_size(" \" 3 MB \" "), Ok(3 << 20));
        assert_eq!(parse_size("4GiB"), Ok(4 << 30));
        assert_eq!(parse_size("512mb"), Ok(512 << 20));
        assert_eq!(parse_size("1.5 GB"), Ok(3 << 29));
        assert_eq!(parse_size("4294967296"), Ok(4 << 30));
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("16KiB"), Ok(16 << 10));
    }

    #[test]
    fn bad_sizes_say_what_is_wrong() {
        assert!(matches!(parse_size("4 XB"), Err(ParseSizeError::UnknownUnit(_, u)) if u == "xb"));
        assert!(matches!(
            parse_size("lots"),
            Err(ParseSizeError::NotASize(_))
        ));
        assert!(matches!(
            parse_size("-1 GB"),
            Err(ParseSizeError::NotASize(_))
        ));
        assert!(matches!(
            parse_size("\"4 GB"),
            Err(ParseSizeError::NotASize(_))
        ));
        assert!(matches!(
            parse_size("99999999 TB"),
            Err(ParseSizeError::OutOfRange(_))
        ));
        assert!(parse_size("4 XB")
            .unwrap_err()
            .to_string()
            .contains("unknown size unit"));
    }
}
