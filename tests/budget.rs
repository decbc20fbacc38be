//! Per-upstream query budgets (`[[zones]] max_qps`), end to end on loopback with tokio's
//! paused clock: a burst of new names reaches each upstream only as far as its budget, the
//! overflow goes to the next upstream, and past every budget clients get the stale answer or
//! SERVFAIL with Extended DNS Error 22.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::Ipv4Addr;
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use support::client::{self, QueryBuilder, answer_a, answer_ttls};
use support::fake_upstream::FakeUpstream;
use support::nodedns::{Nodedns, config_with_admin, zone};
use support::scrape::{Scrape, get};
use tokio::time::Instant;

const ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
const MAX_QPS: f64 = 5.0;
const BURST: usize = 30;

/// The EDE option (RFC 8914) a spent budget adds, as it appears on the wire: option code 15,
/// its length, info code 22 (No Reachable Authority) and the text.
fn budget_ede() -> Vec<u8> {
    let text = b"nodedns: upstream query budget spent";
    let mut option = vec![0, 15];
    option.extend_from_slice(&(2 + text.len() as u16).to_be_bytes());
    option.extend_from_slice(&[0, 22]);
    option.extend_from_slice(text);
    option
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(start_paused = true)]
async fn a_burst_of_new_names_stays_within_each_upstreams_budget() {
    let (first, second) = (FakeUpstream::start().await, FakeUpstream::start().await);
    for up in [&first, &second] {
        up.add_a("cached.example.test.", ADDR, 60);
    }
    let zone = zone(
        ".",
        &[first.addr(), second.addr()],
        &format!("max_qps = {MAX_QPS}"),
    );
    let ns = Nodedns::start(&config_with_admin(&format!(
        "[cache]\nstale_max = \"1h\"\n{zone}"
    )))
    .await;
    ns.probed().await;
    let answer = client::query_udp(ns.addr, "cached.example.test", RecordType::A, None)
        .await
        .unwrap();
    assert_eq!(answer_a(&answer), vec![ADDR]);
    // The entry expires (stale from now on) and both budgets refill meanwhile.
    tokio::time::advance(Duration::from_secs(61)).await;
    first.reset_counts();
    second.reset_counts();

    let started = Instant::now();
    let mut spent = 0;
    for i in 0..BURST {
        let q = QueryBuilder::new(&format!("n{i}.example.test"), RecordType::A).edns(1232);
        let reply = client::exchange_udp_raw(ns.addr, &q.build()).await.unwrap();
        let message = Message::from_vec(&reply).unwrap();
        match message.metadata.response_code {
            ResponseCode::NXDomain => {}
            ResponseCode::ServFail => {
                assert!(contains(&reply, &budget_ede()), "SERVFAIL says why");
                spent += 1;
            }
            other => panic!("n{i}: {other:?}"),
        }
    }
    let (to_first, to_second) = (first.udp_queries(), second.udp_queries());
    // The budget over the time the burst took: one second's worth plus the rate.
    let budget = (MAX_QPS * (1.0 + started.elapsed().as_secs_f64())) as usize;
    assert!(
        to_first <= budget && to_second <= budget,
        "{to_first} and {to_second} queries, a budget of {budget} each"
    );
    assert!(
        to_first >= MAX_QPS as usize,
        "the first upstream's budget is used"
    );
    assert!(to_second >= 1, "the overflow goes to the second");
    assert_eq!(to_first + to_second + spent, BURST, "every name answered");
    assert!(spent > 0, "past both budgets");

    // A name cached earlier, now expired, is answered stale rather than SERVFAIL.
    let stale = client::query_udp(ns.addr, "cached.example.test", RecordType::A, None)
        .await
        .unwrap();
    assert_eq!(answer_a(&stale), vec![ADDR]);
    assert_eq!(answer_ttls(&stale), vec![30], "stale (RFC 8767)");
    assert_eq!(
        first.udp_queries() + second.udp_queries(),
        to_first + to_second
    );

    // Every miss that passed an upstream over is counted on it: past the first's budget,
    // every miss; past the second's, the ones that got SERVFAIL and the stale one.
    let s = Scrape::parse(&get(ns.admin.unwrap(), "/metrics").await.1);
    let skipped = |up: &FakeUpstream| {
        let label = up.addr().to_string();
        s.get(
            "nodedns_upstream_budget_exhausted_total",
            &[("upstream", &label)],
        ) as usize
    };
    assert_eq!(skipped(&first), BURST + 1 - to_first);
    assert_eq!(skipped(&second), spent + 1);
}
