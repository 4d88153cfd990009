//! Query strings: `?r=`, `?w=` on the key routes and `GET /kv?prefix=&limit=&after=`.

use std::collections::BTreeMap;

use axum::http::Uri;

use crate::coordinator::scan::{DEFAULT_SCAN_LIMIT, MAX_SCAN_LIMIT};
use crate::error::{Error, Result};
use crate::rpc::{RequestOption, ScanRequest};

/// The parameters of a query string, percent-decoded (`+` is a space). A
/// name given twice keeps its last value; one that is not UTF-8 once decoded
/// is refused.
pub fn params(uri: &Uri) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let Some(query) = uri.query() else {
        return Ok(out);
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        out.insert(decode(name)?, decode(value)?);
    }
    Ok(out)
}

/// Percent-decodes one part of a query string.
fn decode(part: &str) -> Result<String> {
    let bytes = part.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| {
                        Error::invalid(format!("bad percent escape in the query: {part:?}"))
                    })?;
                out.push(hex);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| Error::invalid("the query is not UTF-8 once decoded"))
}

/// A per-request count (`r`, `w`) from the query, if given: a whole number
/// from 1 (the coordinator checks it against N).
pub fn count(params: &BTreeMap<String, String>, name: &str) -> Result<Option<usize>> {
    match params.get(name) {
        None => Ok(None),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n >= 1 => Ok(Some(n)),
            _ => Err(Error::invalid(format!(
                "{name} must be a whole number from 1 to N, got {v:?}"
            ))),
        },
    }
}

/// A put's or delete's per-request settings: `?w=N` and, on a put, the
/// `X-Dynamo-TTL` header. Also returns the W asked for.
pub fn write_options(
    uri: &Uri,
    headers: &axum::http::HeaderMap,
    put: bool,
) -> Result<(Vec<RequestOption>, Option<usize>)> {
    let w = count(&params(uri)?, "w")?;
    let mut opts: Vec<RequestOption> = w
        .map(|w| RequestOption::W(u32::try_from(w).unwrap_or(u32::MAX)))
        .into_iter()
        .collect();
    if let Some(ttl) = headers.get(TTL_HEADER) {
        if !put {
            return Err(Error::invalid("X-Dynamo-TTL is for puts only"));
        }
        let text = ttl
            .to_str()
            .map_err(|_| Error::invalid("X-Dynamo-TTL must be visible ASCII"))?;
        opts.push(RequestOption::Ttl(crate::types::parse_duration(text)?));
    }
    Ok((opts, w))
}

/// The header a put's TTL travels in (`30s`, `5m`, `7d`).
pub const TTL_HEADER: &str = "x-dynamo-ttl";

/// `GET /kv?prefix=P&limit=N&after=K&consistent=true` as a scan request.
pub fn scan_request(params: &BTreeMap<String, String>) -> Result<ScanRequest> {
    let limit = match params.get("limit") {
        None => DEFAULT_SCAN_LIMIT,
        Some(v) => match v.parse::<u32>() {
            Ok(n) if (1..=MAX_SCAN_LIMIT).contains(&n) => n,
            _ => {
                return Err(Error::invalid(format!(
                    "limit must be a whole number from 1 to {MAX_SCAN_LIMIT}, got {v:?}"
                )))
            }
        },
    };
    let consistent = match params.get("consistent").map(String::as_str) {
        None | Some("false") | Some("0") => false,
        Some("true") | Some("1") | Some("") => true,
        Some(v) => {
            return Err(Error::invalid(format!(
                "consistent must be true or false, got {v:?}"
            )))
        }
    };
    Ok(ScanRequest {
        prefix: params.get("prefix").cloned().unwrap_or_default(),
        after: params.get("after").filter(|a| !a.is_empty()).cloned(),
        limit,
        consistent,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(s: &str) -> Uri {
        s.parse().unwrap()
    }

    #[test]
    fn params_are_percent_decoded_and_plus_is_a_space() {
        let p = params(&uri("/kv?prefix=a%2Fb+c&after=%E2%9C%93&limit=5")).unwrap();
        assert_eq!(p["prefix"], "a/b c");
        assert_eq!(p["after"], "✓");
        assert_eq!(scan_request(&p).unwrap().limit, 5);
    }

    #[test]
    fn bad_queries_are_refused_with_the_reason() {
        let e = params(&uri("/kv?prefix=%zz")).unwrap_err().to_string();
        assert!(e.contains("bad percent escape"), "{e}");
        let e = params(&uri("/kv?prefix=%ff")).unwrap_err().to_string();
        assert!(e.contains("not UTF-8"), "{e}");
        for limit in ["0", "10001", "x", "-1"] {
            let p = params(&uri(&format!("/kv?limit={limit}"))).unwrap();
            let e = scan_request(&p).unwrap_err().to_string();
            assert!(e.contains("limit must be"), "{limit}: {e}");
        }
        let p = params(&uri("/kv/k?r=0")).unwrap();
        assert!(count(&p, "r").is_err());
        let p = params(&uri("/kv/k?r=2")).unwrap();
        assert_eq!(count(&p, "r").unwrap(), Some(2));
        assert_eq!(count(&p, "w").unwrap(), None);
    }

    #[test]
    fn a_scan_without_parameters_lists_from_the_start() {
        let r = scan_request(&params(&uri("/kv")).unwrap()).unwrap();
        assert_eq!(r.prefix, "");
        assert_eq!(r.after, None);
        assert_eq!(r.limit, DEFAULT_SCAN_LIMIT);
        assert!(!r.consistent);
    }
}
