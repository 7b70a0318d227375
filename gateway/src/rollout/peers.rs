//! Several replicas behind one load balancer: each judges the traffic it sees (the same keys map to the same
//! variant everywhere, and a balancer spreads requests evenly, so each sees a fair sample of the fleet's) and a
//! rollback is adopted from any peer. A stop (rolled back or aborted) is one-way: once one replica has seen enough to
//! roll a candidate back, every replica stops serving it within one poll of its peers, and a replica never promotes
//! a rollout a peer has already stopped (it adopts the stop first; a promotion that raced it is undone by the same
//! adoption, within the grace period). What may differ between replicas for a moment is harmless: the step a healthy
//! candidate is at, or when it is promoted.
//!
//! Each peer's `GET /api/v1/rollouts?view=stops` (only the stopped rollouts: small, and answered without an in-flight
//! permit) is read every `interval`, bounded (2 s, 1 MiB). Peers are the operator's (flags); their answers are still
//! parsed under those bounds, and a peer that cannot be read is logged (warn once per outage) and skipped.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::registry::Registry;

/// The largest peer answer read.
const MAX_ANSWER_BYTES: u64 = 1 << 20;
/// How long one peer may take to answer.
const PEER_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Deserialize)]
struct Listing {
    rollouts: Vec<PeerRollout>,
}

#[derive(Deserialize)]
struct PeerRollout {
    model: String,
    identity: String,
    phase: String,
    #[serde(default)]
    reason: Option<String>,
}

/// Polls `peers` (base URLs such as `http://vane-1:8080`) every `interval` until `shutdown`.
pub async fn adopt_stops(registry: Arc<Registry>, peers: Vec<String>, interval: Duration, shutdown: CancellationToken) {
    if peers.is_empty() {
        return;
    }
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(PEER_TIMEOUT))
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into();
    // Not faster than every 100 ms (a zero interval would spin).
    let mut ticks = tokio::time::interval(interval.max(Duration::from_millis(100)));
    // Whether each peer answered last time.
    let peers_count = peers.len();
    let mut reachable = vec![true; peers_count];
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        if registry.snapshot().rollouts().next().is_none() {
            continue;
        }
        let (agent, peers, registry) = (agent.clone(), peers.clone(), Arc::clone(&registry));
        let readable = std::mem::take(&mut reachable);
        reachable = tokio::task::spawn_blocking(move || {
            peers
                .iter()
                .zip(readable)
                .map(|(peer, was)| match read_all(&agent, peer) {
                    Ok(listings) => {
                        for (address, listing) in listings {
                            adopt(&registry, &address, listing);
                        }
                        true
                    }
                    Err(error) => {
                        // Once per outage, not once a second: the first failure warns, the rest are debug.
                        if was {
                            tracing::warn!(%peer, %error, "a rollout peer cannot be read; its rollbacks are not adopted until it can");
                        } else {
                            tracing::debug!(%peer, %error, "a rollout peer cannot be read");
                        }
                        false
                    }
                })
                .collect()
        })
        .await
        .unwrap_or_else(|_| vec![true; peers_count]);
    }
}

/// Names resolved to at most this many addresses (a headless Service of this many pods).
const MAX_ADDRESSES: usize = 64;

/// The base URLs a peer stands for: an `http://` name is resolved now and every address is read, so one headless
/// Service name (`http://vane-peers:8080`) reaches every pod behind it, however many the autoscaler runs (this
/// replica among them: reading itself is harmless). An `https://` peer is read by its name (its certificate names
/// it). Blocking (DNS).
pub fn addresses(peer: &str) -> Result<Vec<String>, String> {
    use std::net::ToSocketAddrs;
    let Some(rest) = peer.strip_prefix("http://") else {
        return if peer.starts_with("https://") {
            Ok(vec![peer.trim_end_matches('/').to_owned()])
        } else {
            Err("a rollout peer is an http:// or https:// URL".to_owned())
        };
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let with_port = if authority.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let resolved = with_port.to_socket_addrs().map_err(|e| format!("{authority} does not resolve: {e}"))?;
    let mut addresses: Vec<String> = resolved.take(MAX_ADDRESSES).map(|a| format!("http://{a}")).collect();
    addresses.sort();
    addresses.dedup();
    Ok(addresses)
}

/// Reads every address `peer` stands for; fails if any cannot be read.
fn read_all(agent: &ureq::Agent, peer: &str) -> Result<Vec<(String, Listing)>, String> {
    addresses(peer)?
        .into_iter()
        .map(|address| {
            read(agent, &address).map(|listing| (address.clone(), listing)).map_err(|e| format!("{address}: {e}"))
        })
        .collect()
}

fn read(agent: &ureq::Agent, peer: &str) -> Result<Listing, String> {
    let url = format!("{}/api/v1/rollouts?view=stops", peer.trim_end_matches('/'));
    let mut response = agent.get(&url).call().map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("answered {}", response.status()));
    }
    let text = response.body_mut().with_config().limit(MAX_ANSWER_BYTES).read_to_string().map_err(|e| e.to_string())?;
    serde_json::from_str(&text).map_err(|e| format!("not a rollout listing: {e}"))
}

/// Adopts every stop in `listing` of a rollout this replica runs (the same identity).
fn adopt(registry: &Registry, peer: &str, listing: Listing) {
    let table = registry.snapshot();
    for theirs in listing.rollouts.into_iter().filter(|r| matches!(r.phase.as_str(), "rolled_back" | "aborted")) {
        let Some(ours) = table.rollout(&theirs.model).filter(|r| r.identity == theirs.identity) else { continue };
        let phase = ours.plan().phase;
        // Adopted in every phase but a stop: also after this replica promoted on its own evidence.
        if matches!(phase, super::Phase::RolledBack | super::Phase::Aborted) {
            continue;
        }
        let reason = format!(
            "{} on peer {peer}: {}",
            theirs.phase.replace('_', " "),
            theirs.reason.unwrap_or_else(|| "no reason given".to_owned()).chars().take(1024).collect::<String>()
        );
        if let Err(why) = ours.operate("adopt_rollback", "peer", Some(reason)) {
            tracing::debug!(model = %ours.model, %why, "a peer's rollback was not adopted");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::addresses;

    #[test]
    fn a_peer_name_stands_for_every_address_it_resolves_to() {
        let local = addresses("http://localhost:8080").unwrap();
        assert!(
            !local.is_empty() && local.iter().all(|a| a.starts_with("http://") && a.ends_with(":8080")),
            "{local:?}"
        );
        assert!(local.contains(&"http://127.0.0.1:8080".to_owned()), "{local:?}");
        assert_eq!(addresses("http://127.0.0.1:9/").unwrap(), ["http://127.0.0.1:9"]);
        assert_eq!(addresses("http://127.0.0.1").unwrap(), ["http://127.0.0.1:80"]);
        assert_eq!(addresses("https://vane-1.example:8443/").unwrap(), ["https://vane-1.example:8443"]);
        assert!(addresses("vane-1:8080").unwrap_err().contains("http:// or https://"));
        assert!(addresses("http://no-such-host.invalid:8080").unwrap_err().contains("does not resolve"));
    }
}
