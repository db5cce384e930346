//! Against the machine's real libfabric (Debian's libfabric1 1.17), with the tcp provider on
//! this machine's own addresses.

use std::sync::mpsc;
use std::thread;

use super::*;

#[test]
fn headers_round_trip_and_strangers_are_ignored() {
    let mut buffer = [0u8; 32];
    write_header(&mut buffer, Kind::Ping, 0xfeed);
    assert_eq!(read_header(&buffer), Some((Kind::Ping, 0xfeed)));
    assert_eq!(read_header(&buffer[..HEADER - 1]), None);
    buffer[0] ^= 1;
    assert_eq!(read_header(&buffer), None);
    write_header(&mut buffer, Kind::Bye, 1);
    buffer[4] = 9;
    assert_eq!(read_header(&buffer), None);
}

#[test]
fn large_sizes_take_fewer_round_trips() {
    assert_eq!(iterations_for(64, 1000), 1000);
    assert_eq!(iterations_for(1 << 20, 1000), 256);
    assert_eq!(iterations_for(1 << 30, 1000), MIN_ITERATIONS);
    assert_eq!(iterations_for(64, 3), 3);
}

/// Starts a tcp listener in a thread; its announcement and its summary.
fn listener(
    sessions: u64,
    serve_for: Duration,
) -> (
    ListenerReady,
    thread::JoinHandle<Result<ListenSummary, ListenError>>,
) {
    let (tx, rx) = mpsc::channel();
    let options = ListenOptions {
        provider: "tcp".into(),
        source: Some("127.0.0.1".into()),
        max_message: 1 << 20,
        serve_for,
        sessions: Some(sessions),
    };
    let handle = thread::spawn(move || {
        listen(None, &options, |ready| {
            tx.send(ready.clone()).map_err(std::io::Error::other)
        })
    });
    let ready = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the listener announces its address");
    (ready, handle)
}

fn ping_options(peer: &str, sizes: Vec<usize>) -> PingOptions {
    PingOptions {
        provider: "tcp".into(),
        peer: peer.to_owned(),
        source: Some("127.0.0.1".into()),
        sizes,
        iterations: 50,
        timeout: Duration::from_secs(5),
    }
}

#[test]
fn two_pingers_measure_every_size_against_one_listener() {
    let (ready, handle) = listener(2, Duration::from_secs(60));
    assert!(ready.endpoint.provider.contains("tcp"), "{ready:?}");
    assert!(ready.address.len() >= 32, "{ready:?}");
    for sizes in [vec![64, 65536], vec![4 << 20]] {
        let report = ping(None, &ping_options(&ready.address, sizes.clone()));
        assert_eq!(report.outcome, PingOutcome::Passed, "{report:?}");
        let measured: Vec<u64> = report.results.iter().map(|r| r.size).collect();
        // 4 MiB is cut to the listener's 1 MiB.
        let expected: Vec<u64> = sizes.iter().map(|s| (*s).min(1 << 20) as u64).collect();
        assert_eq!(measured, expected);
        for result in &report.results {
            assert!(
                result.latency_us > 0.0 && result.bandwidth_mb_s > 0.0,
                "{result:?}"
            );
            assert_eq!(result.iterations, iterations_for(result.size as usize, 50));
        }
    }
    let summary = handle.join().expect("no panic").expect("served");
    assert_eq!(summary.sessions, 2);
    // 10 warm-up and 50 timed round trips per size, sizes 64, 65536 and 1 MiB.
    assert_eq!(summary.pings, 3 * (WARMUP + 50));
}

#[test]
fn a_peer_that_never_reads_is_no_answer_within_the_timeout() {
    // An endpoint that exists but never polls its queue: the stand-in for a node whose
    // traffic is dropped.
    let lib = Libfabric::load(None).expect("libfabric1 is installed");
    let silent = Endpoint::open(&lib, "tcp", Some("127.0.0.1"), 4096).expect("tcp endpoint");
    let address = hex::encode(silent.name().expect("its name"));
    let mut options = ping_options(&address, vec![64]);
    options.timeout = Duration::from_millis(700);
    let started = Instant::now();
    let report = ping(None, &options);
    let took = started.elapsed();
    assert!(
        matches!(&report.outcome, PingOutcome::NoAnswer { message } if message.contains("0.7 s")),
        "{report:?}"
    );
    assert!(report.results.is_empty());
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_secs(10),
        "{took:?}"
    );
    drop(silent);
}

#[test]
fn an_address_that_is_not_hexadecimal_is_a_local_failure() {
    let report = ping(None, &ping_options("not-hex", vec![64]));
    assert_eq!(report.outcome.exit_code(), 2, "{report:?}");
    assert!(report.endpoint.is_none());
}

#[test]
fn a_missing_provider_is_a_local_failure_naming_it() {
    let mut options = ping_options("00", vec![64]);
    options.provider = "efa".into();
    let report = ping(None, &options);
    let PingOutcome::LocalFailure { code, message } = &report.outcome else {
        panic!("{report:?}");
    };
    assert_eq!(*code, Some(-61), "{message}");
    assert!(message.contains("efa"), "{message}");
}
