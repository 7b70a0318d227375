//! URLs as they may be shown: in the status page, logs and errors. A `--repo` URL may carry a password
//! (`https://user:token@host/...`) and an artifact URL a presigned query string (`?X-Amz-Signature=...`); both are
//! credentials, and both are replaced before a URL leaves the process.

/// `url` with the password of its user info replaced by `***` and its query string by `?<redacted>`.
pub fn url(url: &str) -> String {
    let (rest, query) = match url.split_once('?') {
        Some((rest, _)) => (rest, "?<redacted>"),
        None => (url, ""),
    };
    let Some((scheme, after)) = rest.split_once("://") else { return format!("{rest}{query}") };
    let (authority, path) = after.split_at(after.find('/').unwrap_or(after.len()));
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{user}:***@{host}"),
            // A lone user info part is a token in GitHub's and GitLab's https URLs.
            None if scheme.starts_with("http") => format!("***@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority.to_owned(),
    };
    format!("{scheme}://{authority}{path}{query}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_tokens_and_presigned_queries_are_redacted() {
        assert_eq!(super::url("https://bot:s3cret@git.example/deploy.git"), "https://bot:***@git.example/deploy.git");
        assert_eq!(super::url("https://ghp_token@github.com/o/r.git"), "https://***@github.com/o/r.git");
        assert_eq!(super::url("ssh://git@host:22/r.git"), "ssh://git@host:22/r.git");
        assert_eq!(
            super::url("https://bucket.s3.amazonaws.com/m.onnx?X-Amz-Signature=abc&X-Amz-Credential=k"),
            "https://bucket.s3.amazonaws.com/m.onnx?<redacted>"
        );
        assert_eq!(super::url("/srv/git/deploy.git"), "/srv/git/deploy.git");
        assert_eq!(super::url("git@github.com:o/r.git"), "git@github.com:o/r.git");
    }
}
