//! Where clients connect: `--url http://127.0.0.1:8880[/path/]` turned into a loopback
//! socket address and the Engine.IO WebSocket URL. Resolved once, shared by every client.
//! A scenario that spreads its clients over the nodes of a cluster takes a comma-separated
//! list ([`Target::resolve_all`]).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use tokio::net::{TcpSocket, TcpStream};

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

/// Ports the kernel hands out per local address (`net.ipv4.ip_local_port_range`,
/// 32768-60999 by default: 28,232); a source address is given at most this many clients
/// by [`Sources::auto`], leaving room for other connections and `TIME_WAIT`.
pub const CLIENTS_PER_SOURCE: usize = 20_000;

/// The loopback source addresses clients connect from: `127.0.0.1` ..= `127.0.0.{n}`,
/// client `i` from address `i % n`. One address gives one client per ephemeral port
/// (~28,000 by default), so 100,000 clients need several. Every `127.0.0.0/8` address is
/// local on Linux without configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sources(u8);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SourcesError {
    #[error("--sources must be 0 (one per {CLIENTS_PER_SOURCE} clients) or 1 to 254, got {0}")]
    Count(usize),
    #[error(
        "--sources {0} needs an IPv4 loopback server (127.0.0.x): the source addresses are 127.0.0.1 to 127.0.0.{0}"
    )]
    NotIpv4(u8),
}

impl Sources {
    /// `n` addresses, or (`n == 0`) one per [`CLIENTS_PER_SOURCE`] clients.
    pub fn new(n: usize, clients: usize) -> Result<Self, SourcesError> {
        let n = if n == 0 { Self::auto(clients) } else { n };
        match u8::try_from(n) {
            Ok(n @ 1..=254) => Ok(Self(n)),
            _ => Err(SourcesError::Count(n)),
        }
    }

    fn auto(clients: usize) -> usize {
        clients.div_ceil(CLIENTS_PER_SOURCE).max(1)
    }

    pub fn count(self) -> u8 {
        self.0
    }

    /// Refuses several sources toward a server that is not on IPv4 loopback.
    pub fn check(self, target: &Target) -> Result<Self, SourcesError> {
        match target.addr.ip() {
            IpAddr::V4(ip) if ip.is_loopback() => Ok(self),
            _ if self.0 == 1 => Ok(self),
            _ => Err(SourcesError::NotIpv4(self.0)),
        }
    }

    /// Client `i`'s address; `None` with one source (the kernel picks, as without).
    pub fn of(self, i: usize) -> Option<IpAddr> {
        if self.0 == 1 {
            return None;
        }
        let host = (i % usize::from(self.0)) as u8 + 1;
        Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, host)))
    }
}

/// A TCP connection to `addr` from `source` (port chosen by the kernel), with
/// `TCP_NODELAY`.
pub async fn tcp_connect(addr: SocketAddr, source: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let tcp = match source {
        None => TcpStream::connect(addr).await?,
        Some(ip) => {
            let socket = match ip {
                IpAddr::V4(_) => TcpSocket::new_v4()?,
                IpAddr::V6(_) => TcpSocket::new_v6()?,
            };
            socket.bind(SocketAddr::new(ip, 0))?;
            socket.connect(addr).await?
        }
    };
    tcp.set_nodelay(true)?;
    Ok(tcp)
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
    async fn source_addresses() {
        let s = Sources::new(0, 100_000).expect("auto");
        assert_eq!(s.count(), 5);
        assert_eq!(s.of(0), Some("127.0.0.1".parse().expect("ip")));
        assert_eq!(s.of(6), Some("127.0.0.2".parse().expect("ip")));
        assert_eq!(Sources::new(0, 10).expect("auto").of(3), None);
        assert_eq!(Sources::new(0, 0).expect("auto").count(), 1);
        assert_eq!(Sources::new(255, 1), Err(SourcesError::Count(255)));
        let v6 = Target {
            addr: "[::1]:1".parse().expect("addr"),
            ws_url: String::new(),
        };
        assert_eq!(s.check(&v6), Err(SourcesError::NotIpv4(5)));
        assert!(Sources::new(1, 1).expect("one").check(&v6).is_ok());

        // A real connection from 127.0.0.3 arrives from 127.0.0.3.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("listen");
        let addr = listener.local_addr().expect("addr");
        let from = Sources::new(3, 3).expect("three").of(2);
        let (client, accepted) = tokio::join!(tcp_connect(addr, from), listener.accept());
        let (_server, peer) = accepted.expect("accept");
        assert_eq!(Some(peer.ip()), from);
        assert_eq!(
            client.expect("connect").local_addr().expect("local").ip(),
            peer.ip()
        );
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
