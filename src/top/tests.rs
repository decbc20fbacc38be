#![allow(clippy::unwrap_used)]
use super::*;
use crate::search_path::Suffixes;

fn ip(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

fn wire_name(dotted: &str) -> Vec<u8> {
    let mut w = Vec::new();
    for label in dotted.split('.') {
        w.push(u8::try_from(label.len()).unwrap());
        w.extend(label.bytes());
    }
    w
}

/// The instant `secs` seconds after `top` began.
fn at(top: &Top, secs: u64) -> Instant {
    top.origin + Duration::from_secs(secs)
}

fn keys(entries: &[report::Entry]) -> Vec<&str> {
    entries.iter().map(|e| e.key.as_str()).collect()
}

#[test]
fn a_window_covers_the_slices_it_asks_for_and_no_older_ones() {
    let top = Top::new();
    // Second 5: .2 misses 3 times. Second 65: .3 misses twice. Second 125: .4 once.
    for _ in 0..3 {
        top.record(Event::Miss(ip(2)), at(&top, 5));
    }
    for _ in 0..2 {
        top.record(Event::Miss(ip(3)), at(&top, 65));
    }
    top.record(Event::Miss(ip(4)), at(&top, 125));

    let at = |seconds, secs| top.report_at(seconds, 10, Duration::from_secs(secs));
    // At second 129, the last 10 s are the slice 120..130.
    let r = at(10, 129);
    assert_eq!(keys(&r.clients_by_misses), ["127.0.0.4"]);
    assert_eq!(r.covered_seconds, 9);
    // The last 70 s: slices from 60, so .3 and .4, not .2.
    let r = at(70, 129);
    assert_eq!(keys(&r.clients_by_misses), ["127.0.0.3", "127.0.0.4"]);
    assert_eq!(r.clients_by_misses[0].count, 2);
    assert_eq!(r.covered_seconds, 69);
    // Everything, heaviest first.
    let r = at(300, 129);
    assert_eq!(
        keys(&r.clients_by_misses),
        ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    );
    // No more than the process has run.
    assert_eq!(r.covered_seconds, 129);
    // Five minutes on, nothing is left in any window.
    let r = at(300, 129 + 300);
    assert!(r.clients_by_misses.is_empty(), "{r:?}");
}

#[test]
fn slices_of_other_threads_are_merged_at_read_time() {
    let top = std::sync::Arc::new(Top::new());
    let threads: Vec<_> = (0..4u8)
        .map(|t| {
            let top = top.clone();
            std::thread::spawn(move || {
                // Thread t sees client .9 ten times and its own client t+1 times.
                for _ in 0..10 {
                    top.record(Event::Miss(ip(9)), at(&top, 12));
                }
                for _ in 0..=t {
                    top.record(Event::Miss(ip(t)), at(&top, 12));
                }
                // A later event retires this thread's slice 1 into the ring.
                top.record(Event::Servfail(b"\x01x"), at(&top, 25));
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let r = top.report_at(60, 2, Duration::from_secs(29));
    assert_eq!(keys(&r.clients_by_misses), ["127.0.0.9", "127.0.0.3"]);
    assert_eq!(r.clients_by_misses[0].count, 40);
    assert_eq!(r.names_by_servfail[0].count, 4);
    assert_eq!(keys(&r.names_by_servfail), ["x"]);
}

#[test]
fn a_slice_retired_late_does_not_replace_a_newer_one() {
    let top = Top::new();
    let (go, wait) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|s| {
        let top = &top;
        let late = s.spawn(move || {
            // This thread's slice 0 stays current while it idles...
            top.record(Event::Miss(ip(6)), at(top, 1));
            wait.recv().unwrap();
            // ... and is retired at second 410, when the ring's slot for it holds slice 30.
            top.record(Event::Servfail(b"\x01x"), at(top, 410));
        });
        top.record(Event::Miss(ip(5)), at(top, 305));
        top.record(Event::Miss(ip(5)), at(top, 400));
        go.send(()).unwrap();
        late.join().unwrap();
    });
    let r = top.report_at(300, 10, Duration::from_secs(410));
    let misses: Vec<(&str, u64)> = r
        .clients_by_misses
        .iter()
        .map(|e| (e.key.as_str(), e.count))
        .collect();
    assert_eq!(misses, [("127.0.0.5", 2)]);
}

/// A reply's header and question for `dotted`, type A.
fn reply_for(dotted: &str) -> Vec<u8> {
    let mut reply = vec![0u8; wire::HEADER_LEN];
    reply.extend(wire_name(dotted));
    reply.extend([0, 0, 1, 0, 1]);
    reply
}

#[test]
fn queries_are_sampled_with_their_weight_without_aliasing() {
    let top = Top::new();
    let now = Instant::now();
    // Clients taking turns in a fixed pattern, .8 twice as often as .7 and .9: a fixed
    // sampling gap would pick the same position of the pattern every time.
    let rounds = 4000u64;
    for _ in 0..rounds {
        for client in [7, 8, 9, 8] {
            top.query(ip(client), now);
        }
    }
    let r = top.report(60, 5, now);
    // Within 10% of the truth (the sampled counts' spread is about 3%).
    for (key, truth) in [("127.0.0.7", rounds), ("127.0.0.8", 2 * rounds)] {
        let e = r.clients_by_queries.iter().find(|e| e.key == key).unwrap();
        assert_eq!(e.count % u64::from(QUERY_SAMPLE), 0, "{e:?}");
        assert!(e.count.abs_diff(truth) < truth / 10, "{e:?}: {truth}");
    }
    assert_eq!(r.query_sample, QUERY_SAMPLE);
}

#[test]
fn nxdomain_replies_are_sampled_and_expansions_give_their_base() {
    let top = Top::new();
    let search = Suffixes::parse(&crate::search_path::DEFAULT).unwrap();
    let base = |qname: &[u8]| search.base(qname).map(<[u8]>::len);
    let expansion = reply_for("Registry.Example.com.gitlab.svc.cluster.local");
    let other = reply_for("Nope.Example");
    let rounds = 2000u64;
    for _ in 0..rounds {
        for reply in [&expansion, &other, &other] {
            top.reply(wire::rcode::NXDOMAIN, reply, base);
        }
        top.reply(wire::rcode::NOERROR, &expansion, base);
    }
    for _ in 0..3 {
        top.reply(wire::rcode::SERVFAIL, &other, base);
    }
    let r = top.report(60, 5, Instant::now());
    assert_eq!(
        keys(&r.names_by_nxdomain),
        [
            "nope.example",
            "registry.example.com.gitlab.svc.cluster.local"
        ]
    );
    let nope = r.names_by_nxdomain[0].count;
    assert!(nope.abs_diff(2 * rounds) < rounds / 5, "{r:?}");
    assert_eq!(keys(&r.search_bases), ["registry.example.com"]);
    let bases = r.search_bases[0].count;
    assert!(bases.abs_diff(rounds) < rounds / 10, "{r:?}");
    // SERVFAIL is counted whole.
    assert_eq!(keys(&r.names_by_servfail), ["nope.example"]);
    assert_eq!(r.names_by_servfail[0].count, 3);
}

#[test]
fn a_question_that_is_no_plain_name_counts_nothing() {
    let top = Top::new();
    let none = |_: &[u8]| None;
    let header = [0u8; 12];
    // A compression pointer, a truncated label, a name over 255 bytes.
    let mut long = header.to_vec();
    for _ in 0..5 {
        long.push(63);
        long.extend([b'a'; 63]);
    }
    long.push(0);
    for reply in [
        [&header[..], &[0xC0, 12]].concat(),
        [&header[..], &[5, b'a']].concat(),
        long,
    ] {
        top.reply(wire::rcode::SERVFAIL, &reply, none);
    }
    let r = top.report(60, 5, Instant::now());
    assert!(r.names_by_servfail.is_empty(), "{r:?}");
}

#[test]
fn reports_read_back_from_json_and_print_aligned_tables() {
    let top = Top::new();
    for (client, times) in [(3u8, 12), (2, 1)] {
        for _ in 0..times {
            top.record(Event::Miss(ip(client)), at(&top, 0));
        }
    }
    let r = top.report_at(60, 5, Duration::from_millis(300));
    // A third of a second is a second begun.
    assert_eq!(r.covered_seconds, 1);
    let back: Report = serde_json::from_str(&r.to_json()).unwrap();
    assert_eq!(back, r);
    let text = r.to_text();
    assert!(text.contains("sampled 1 in 16"), "{text}");
    let misses = text.split("Clients by misses").nth(1).unwrap();
    let rows: Vec<&str> = misses.lines().skip(2).take(2).collect();
    assert_eq!(
        rows,
        ["     12       0  127.0.0.3", "      1       0  127.0.0.2"]
    );
    assert_eq!(crate::wire::name_text(b"\x03a.b\x01c"), "a\\.b.c");
}
