//! Query strings: the first value of a parameter, percent-decoded (`+` as space).

/// The first value of `name` in a raw query string, percent-decoded (`+` as space).
pub fn query_param(query: &str, name: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params_are_decoded() {
        let q = "EIO=4&transport=polling&token=a%20b+c&userId=7&bad=%zz&tail=%4";
        assert_eq!(query_param(q, "token").as_deref(), Some("a b c"));
        assert_eq!(query_param(q, "userId").as_deref(), Some("7"));
        assert_eq!(query_param(q, "bad").as_deref(), Some("%zz"));
        assert_eq!(query_param(q, "tail").as_deref(), Some("%4"));
        assert_eq!(query_param(q, "missing"), None);
    }
}
