//! Where clients connect: `--url http://127.0.0.1:8880[/path/]` turned into a loopback
//! socket address and the Engine.IO WebSocket URL. Resolved once, shared by every client.
//! A scenario that spreads its clients over the nodes of a cluster takes a comma-separated
//! list ([`Target::resolve_all`]).

use std::net::SocketAddr;

/// A validated, loopback-only server address.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    /// `ws://HOST/socket.io/?EIO=4&transport=websocket`.
    pub ws_url: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("url {0:?}: expected http://HOST:PORT[/path/] or ws://HOST:PORT[/path/]")]
    Syntax(String),
    #[error("url {0:?}: cannot resolve: {1}")]
    Resolve(String, std::io::Error),
    #[error("url {0:?} resolves to {1}: the generator only measures over loopback")]
    NotLoopback(String, SocketAddr),
    #[error(
        "url {0:?}: this scenario takes one url (only fanout and storm spread clients over a comma-separated list)"
    )]
    Many(String),
}

impl Target {
    /// Parses and resolves `url`; refuses anything that is not a loopback address, so a
    /// typo can never point ten thousand connections at another machine.
    pub async fn resolve(url: &str) -> Result<Self, TargetError> {
        if url.contains(',') {
            return Err(TargetError::Many(url.to_owned()));
        }
        let syntax = || TargetError::Syntax(url.to_owned());
        let rest = ["http://", "ws://"]
            .iter()
            .find_map(|scheme| url.strip_prefix(scheme))
            .ok_or_else(syntax)?;
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if host.is_empty() || path.contains(['?', '#']) {
            return Err(syntax());
        }
        let path = match path {
            "" | "/" => "/socket.io/".to_owned(),
            p if p.ends_with('/') => p.to_owned(),
            p => format!("{p}/"),
        };
        let host_port = if host.contains(':') && !host.ends_with(']') {
            host.to_owned()
        } else {
            format!("{host}:80")
        };
        let addr = tokio::net::lookup_host(&host_port)
            .await
            .map_err(|e| TargetError::Resolve(url.to_owned(), e))?
            .next()
            .ok_or_else(syntax)?;
        if !addr.ip().is_loopback() {
            return Err(TargetError::NotLoopback(url.to_owned(), addr));
        }
        Ok(Self {
            addr,
            ws_url: format!("ws://{host}{path}?EIO=4&transport=websocket"),
        })
    }

    /// Every URL of a comma-separated list (the nodes of a cluster, in order: clients go
    /// round-robin, the first one takes the scenario's own client such as the buyer).
    pub async fn resolve_all(list: &str) -> Result<Vec<Self>, TargetError> {
        let mut out = Vec::new();
        for url in list.split(',').map(str::trim) {
            if url.is_empty() {
                return Err(TargetError::Syntax(list.to_owned()));
            }
            out.push(Self::resolve(url).await?);
        }
        // `split` yields at least one item, so the list is never empty here.
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn builds_the_websocket_url() {
        let t = Target::resolve("http://127.0.0.1:8880")
            .await
            .expect("valid url");
        assert_eq!(t.addr, "127.0.0.1:8880".parse().expect("addr"));
        assert_eq!(
            t.ws_url,
            "ws://127.0.0.1:8880/socket.io/?EIO=4&transport=websocket"
        );
        let t = Target::resolve("ws://127.0.0.1:1/rt")
            .await
            .expect("valid url");
        assert_eq!(t.ws_url, "ws://127.0.0.1:1/rt/?EIO=4&transport=websocket");
    }

    #[tokio::test]
    async fn refuses_bad_or_remote_urls() {
        assert!(matches!(
            Target::resolve("127.0.0.1:8880").await,
            Err(TargetError::Syntax(_))
        ));
        assert!(matches!(
            Target::resolve("http://10.1.2.3:80").await,
            Err(TargetError::NotLoopback(..))
        ));
        assert!(matches!(
            Target::resolve("http://127.0.0.1:1,http://127.0.0.1:2").await,
            Err(TargetError::Many(_))
        ));
    }

    #[tokio::test]
    async fn resolves_a_list_in_order() {
        let all = Target::resolve_all("http://127.0.0.1:1, http://127.0.0.1:2/rt")
            .await
            .expect("valid list");
        let ports: Vec<u16> = all.iter().map(|t| t.addr.port()).collect();
        assert_eq!(ports, [1, 2]);
        assert_eq!(
            all[1].ws_url,
            "ws://127.0.0.1:2/rt/?EIO=4&transport=websocket"
        );
        for bad in ["", "http://127.0.0.1:1,", ",http://127.0.0.1:1"] {
            assert!(
                matches!(Target::resolve_all(bad).await, Err(TargetError::Syntax(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(
            Target::resolve_all("http://127.0.0.1:1,http://10.0.0.1:2").await,
            Err(TargetError::NotLoopback(..))
        ));
    }
}
