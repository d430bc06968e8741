//! Resolution through a real DNS server on loopback: NET-06 (private answers, flipping
//! answers) and NET-11 (names nobody allowed are never asked about).

mod common;

use std::net::IpAddr;
use std::sync::atomic::Ordering::SeqCst;

use common::*;
use safehouse_gateway::{Config, Resolver};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn dns_resolver(dns: &Dns) -> Resolver {
    Resolver { dns_server: Some(dns.addr), ..Resolver::default() }
}

#[tokio::test]
async fn allowed_name_resolving_to_a_special_range_is_denied_naming_the_range() {
    // Nothing here is ever dialled: every answer holds a denied address, and the check comes
    // before the dial (the machine's rules forbid traffic to non-loopback addresses anyway).
    let dns = dns_server(|name, _| match name {
        "loop.dns.test" => vec![ip("127.0.0.1")],
        "private.dns.test" => vec![ip("10.0.0.1")],
        "meta.dns.test" => vec![ip("169.254.169.254")],
        "mixed.dns.test" => vec![ip("192.0.2.10"), ip("127.0.0.1")],
        _ => vec![],
    })
    .await;
    let gw = gateway(Config::new(policy(&["*.dns.test:*"]), dns_resolver(&dns), host())).await;
    for (name, range) in [
        ("loop.dns.test", "this host (127.0.0.0/8)"),
        ("private.dns.test", "private (10.0.0.0/8)"),
        ("meta.dns.test", "cloud metadata (169.254.169.254/32)"),
        ("mixed.dns.test", "this host (127.0.0.0/8)"),
    ] {
        let r = get(gw.addr, &format!("http://{name}:8080/")).await;
        assert_eq!(r.status, 403, "{name}: {}", r.text());
        assert_eq!(r.header("x-safehouse-denied"), Some(range), "{name}");
        assert!(r.text().contains(&format!("{name} resolves to")), "{}", r.text());
        let raw_connect = raw(gw.addr, &format!("CONNECT {name}:443 HTTP/1.1\r\n\r\n")).await;
        assert_eq!(raw_connect.status, 403);
        assert_eq!(socks(gw.addr, &socks_domain(name, 443)).await.0, 2);
    }
    let r = get(gw.addr, "http://nothing.dns.test:8080/").await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(r.text().contains("no address"), "{}", r.text());
}

#[tokio::test]
async fn a_flipping_answer_never_reaches_the_loopback_upstream() {
    // The upstream listens on 127.0.0.1. The DNS server alternates between 127.0.0.2, which
    // an address rule allows (standing for a public address; nothing listens there, so a
    // dial is refused at once) and 127.0.0.1, which no rule allows. A gateway that checked one
    // answer and dialled another would reach the upstream.
    let up = upstream().await;
    let port = up.addr.port();
    let dns = dns_server(|_, n| if n % 2 == 0 { vec![ip("127.0.0.2")] } else { vec![ip("127.0.0.1")] }).await;
    let rules = [format!("flip.test:{port}"), format!("127.0.0.2:{port}")];
    let gw = gateway(Config::new(policy(&[&rules[0], &rules[1]]), dns_resolver(&dns), host())).await;
    for _ in 0..6 {
        let r = get(gw.addr, &format!("http://flip.test:{port}/")).await;
        assert!(r.status == 403 || r.status == 502, "{} {}", r.status, r.text());
        let r = raw(gw.addr, &format!("CONNECT flip.test:{port} HTTP/1.1\r\n\r\n")).await;
        assert!(r.status == 403 || r.status == 502, "{} {}", r.status, r.text());
    }
    assert_eq!(up.connections.load(SeqCst), 0);
    // one resolution (A + AAAA) per request, never a second lookup before dialling
    assert_eq!(dns.queries.lock().unwrap().len(), 12 * 2);
}

#[tokio::test]
async fn names_the_policy_did_not_allow_are_never_resolved() {
    // NET-11
    let dns = dns_server(|_, _| vec![ip("192.0.2.1")]).await;
    let gw = gateway(Config::new(policy(&["allowed.test"]), dns_resolver(&dns), host())).await;
    let r = get(gw.addr, "http://secret-data.attacker.test/").await;
    assert_eq!(r.status, 403);
    let r = raw(gw.addr, "CONNECT secret-data.attacker.test:443 HTTP/1.1\r\n\r\n").await;
    assert_eq!(r.status, 403);
    assert_eq!(socks(gw.addr, &socks_domain("secret-data.attacker.test", 443)).await.0, 2);
    // a port the policy did not grant: the name is not resolved either
    let r = get(gw.addr, "http://allowed.test:8080/").await;
    assert_eq!(r.status, 403);
    assert!(dns.queries.lock().unwrap().is_empty(), "{:?}", dns.queries.lock().unwrap());
    let denials = gw.gw.stats().recent_denials;
    assert_eq!(denials.len(), 4);
    assert_eq!(denials[0].target, "secret-data.attacker.test:80");
}

#[tokio::test]
async fn dns_answers_are_used_for_allowed_names() {
    let up = upstream().await;
    let port = up.addr.port();
    let dns = dns_server(|_, _| vec![ip("127.0.0.1")]).await;
    // loopback reached through a name only with an explicit address rule for it
    let rules = [format!("svc.test:{port}"), format!("127.0.0.1:{port}")];
    let gw = gateway(Config::new(policy(&[&rules[0], &rules[1]]), dns_resolver(&dns), host())).await;
    let r = get(gw.addr, &format!("http://svc.test:{port}/")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(dns.queries.lock().unwrap().as_slice(), ["svc.test", "svc.test"]);
}
