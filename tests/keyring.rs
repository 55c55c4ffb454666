//! `syncer keyring` against real daemons: a whole-pool key rotation under continuous
//! registrations, a member stopped during a step reported as not confirmed, and keys refused
//! with a clear message (never echoing the key).

mod support;

use std::path::{Path, PathBuf};

use support::sync::{DcSetup, NewInstance, SYNC_DEADLINE, World, metric_sum};
use support::{Outcome, run, syncer};

/// A new key from `syncer keygen`.
fn keygen() -> String {
    let mut cmd = syncer(Path::new("."));
    cmd.arg("keygen");
    let out = run(cmd);
    assert_eq!(out.code, Some(0), "keygen failed: {}", out.stderr);
    out.stdout.trim().to_owned()
}

/// `syncer keyring --rpc-addr RPC ARGS...`.
fn keyring(rpc: &str, args: &[&str]) -> Outcome {
    let mut cmd = syncer(Path::new("."));
    cmd.args(["keyring", "--rpc-addr", rpc]).args(args);
    run(cmd)
}

/// The fingerprint `syncer keyring` prints for `key`.
fn fingerprint(key: &str) -> String {
    syncer::rpc::client::fingerprint(key)
}

/// Waits until the syncer at `rpc` sees `n` alive members.
fn wait_alive(w: &mut World, rpc: &str, n: usize) {
    w.wait_until("every member alive", SYNC_DEADLINE, |_| {
        let mut cmd = syncer(Path::new("."));
        cmd.args(["members", "--format", "json", "--rpc-addr", rpc]);
        let out = run(cmd);
        out.stdout.matches("\"status\": \"alive\"").count() == n
    });
}

fn metric(w: &World, i: usize, name: &str, label: &str) -> f64 {
    metric_sum(&w.metrics(i), name, &[label])
}

#[test]
fn a_whole_pool_rotation_under_registrations_loses_nothing_and_marks_nobody_down() {
    let old = keygen();
    let new = keygen();
    let mut w = World::start(3, &["--gossip-key", &old]);
    let rpc = w.node(0).rpc.clone();
    wait_alive(&mut w, &rpc, 3);
    let sids: Vec<String> = (0..3)
        .map(|i| w.reg(i).create_service("shop", &format!("svc{i}"), "1.0.0"))
        .collect();

    let mut registered = [0usize; 3];
    let outcomes = std::thread::scope(|scope| {
        let rotation = scope.spawn(|| {
            let mut outcomes = Vec::new();
            for step in [["install", &new], ["use", &new], ["remove", &old]] {
                outcomes.push((step[0], keyring(&rpc, &step)));
            }
            outcomes.push(("list", keyring(&rpc, &["list"])));
            outcomes
        });
        // Registrations keep arriving in every data centre while the keys change.
        let mut n = 0;
        while !rotation.is_finished() || n < 6 {
            let i = n % 3;
            w.reg(i).register(
                &sids[i],
                &NewInstance::new(&format!("host-{n}"), &format!("rest://10.{i}.0.{n}:8080")),
            );
            registered[i] += 1;
            n += 1;
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        rotation.join().expect("rotation thread")
    });

    for (step, out) in &outcomes {
        w.check(out.code == Some(0), || {
            format!(
                "keyring {step} failed ({:?}): {}{}",
                out.code, out.stdout, out.stderr
            )
        });
        let lines: Vec<&str> = out.stdout.lines().filter(|l| l.contains(" ok ")).collect();
        w.check(lines.len() == 3, || {
            format!("keyring {step}: not three confirmations: {}", out.stdout)
        });
        w.check(
            !out.stdout.contains(&new) && !out.stdout.contains(&old),
            || format!("keyring {step} printed a key: {}", out.stdout),
        );
    }
    let (_, list) = &outcomes[3];
    let want = format!("primary={} keys={}\n", fingerprint(&new), fingerprint(&new));
    w.check(
        list.stdout
            .lines()
            .filter(|l| format!("{l}\n").ends_with(&want))
            .count()
            == 3,
        || {
            format!(
                "after the rotation every member has only the new key: {}",
                list.stdout
            )
        },
    );

    let total: usize = registered.iter().sum();
    w.wait_until(
        "every registration mirrored to the other two",
        SYNC_DEADLINE,
        |w| (0..3).all(|i| w.reg(i).copies().len() == total - registered[i]),
    );
    for i in 0..3 {
        let downs = metric(
            &w,
            i,
            "syncer_gossip_membership_changes_total",
            "status=\"down\"",
        );
        w.check(downs == 0.0, || format!("dc{} saw a member go down", i + 1));
        let sealed_away = metric(
            &w,
            i,
            "syncer_gossip_datagrams_dropped_total",
            "reason=\"decrypt\"",
        );
        w.check(sealed_away == 0.0, || {
            format!(
                "dc{} dropped datagrams it could not open during the rotation",
                i + 1
            )
        });
        let ring = std::fs::read_to_string(w.dcs[i].data_dir.join("gossip-keyring.json"))
            .unwrap_or_default();
        w.check(ring.contains(&new) && !ring.contains(&old), || {
            format!("dc{} keyring file not rotated", i + 1)
        });
    }
}

#[test]
fn a_stopped_member_is_reported_as_not_confirmed() {
    let old = keygen();
    let new = keygen();
    let mut w = World::start(3, &["--gossip-key", &old]);
    let rpc = w.node(0).rpc.clone();
    wait_alive(&mut w, &rpc, 3);
    w.stop_daemon(2, "KILL");
    let out = keyring(&rpc, &["install", &new]);
    w.check(out.code == Some(2), || {
        format!("exit {:?}: {}{}", out.code, out.stdout, out.stderr)
    });
    w.check(
        out.stderr.contains("not confirmed by 1 of 3 members") && out.stderr.contains("dc3"),
        || format!("the stopped member is not named: {}", out.stderr),
    );
    w.check(
        out.stdout.lines().filter(|l| l.contains(" ok ")).count() == 2,
        || format!("the two running members confirm: {}", out.stdout),
    );
}

#[test]
fn bad_keys_and_refused_steps_get_clear_messages() {
    let key = keygen();
    let mut w = World::start(2, &["--gossip-key", &key]);
    let rpc = w.node(0).rpc.clone();
    wait_alive(&mut w, &rpc, 2);

    let short = "c2hvcnQta2V5LXRleHQ="; // base64 of 14 bytes
    let out = keyring(&rpc, &["install", short]);
    w.check(out.code == Some(1), || {
        format!("short key: {:?} {}", out.code, out.stderr)
    });
    w.check(
        out.stderr.contains("not a gossip key") && out.stderr.contains("32 bytes"),
        || format!("short key message: {}", out.stderr),
    );
    w.check(!out.stderr.contains(short), || {
        "the key text was echoed".to_owned()
    });

    let out = keyring(&rpc, &["install", "not base64!"]);
    w.check(out.stderr.contains("not valid base64"), || {
        format!("bad base64 message: {}", out.stderr)
    });

    // The primary cannot be removed; a key not installed cannot be used. Every member
    // refuses and says why.
    for (args, why) in [
        (
            ["remove", key.as_str()],
            "the primary key cannot be removed",
        ),
        (["use", &keygen()], "the key is not installed"),
    ] {
        let out = keyring(&rpc, &args);
        w.check(out.code == Some(2), || {
            format!("{args:?}: exit {:?}", out.code)
        });
        w.check(
            out.stdout.lines().filter(|l| l.contains(why)).count() == 2,
            || format!("{args:?}: {}", out.stdout),
        );
    }

    // Changes over plain text are logged as open to anyone reaching the rpc port.
    let line = w.dcs[0]
        .node
        .as_mut()
        .expect("dc1 runs")
        .daemon
        .wait_for_line("keyring change over plain-text rpc");
    w.check(!line.contains(&key), || {
        format!("the key text is in the log: {line}")
    });

    // The pool still uses its key: the list shows it as every member's primary.
    let out = keyring(&rpc, &["list"]);
    let want = format!("primary={}", fingerprint(&key));
    w.check(
        out.stdout.lines().filter(|l| l.contains(&want)).count() == 2,
        || format!("list: {}", out.stdout),
    );
}

/// With mutual TLS the keyring call needs a client certificate of the pool's CA (the listener
/// refuses the handshake otherwise), and the fan-out reaches the other members over TLS too.
#[test]
fn with_mutual_tls_the_keyring_needs_a_client_certificate() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("certs");
    let mut cmd = syncer(dir.path());
    cmd.arg("dev-certs")
        .arg("--out")
        .arg(&out)
        .args(["--hosts", "127.0.0.1,127.0.0.2,127.0.0.3,localhost"]);
    let made = run(cmd);
    assert_eq!(made.code, Some(0), "dev-certs failed: {}", made.stderr);
    let file = |name: &str| -> String {
        let path: PathBuf = out.join(name);
        path.display().to_string()
    };
    let (cert, key_file, ca) = (file("node.pem"), file("node-key.pem"), file("ca.pem"));
    let tls: Vec<String> = ["--tls-cert", &cert, "--tls-key", &key_file, "--tls-ca", &ca]
        .map(str::to_owned)
        .to_vec();
    let setup = || DcSetup {
        flags: tls.clone(),
        ..DcSetup::default()
    };
    let key = keygen();
    let new = keygen();
    let mut w = World::start_each(vec![setup(), setup()], &["--gossip-key", &key]);
    let rpc = w.node(0).rpc.clone();
    let with_cert = |step: &[&str]| {
        let mut args: Vec<&str> = tls.iter().map(String::as_str).collect();
        args.extend(step);
        keyring(&rpc, &args)
    };
    w.wait_until("both members in the pool", SYNC_DEADLINE, |_| {
        with_cert(&["list"]).stdout.matches(" ok ").count() == 2
    });

    for client in [vec![], vec!["--tls-ca", ca.as_str()]] {
        let mut args = client.clone();
        args.extend(["install", new.as_str()]);
        let out = keyring(&rpc, &args);
        w.check(out.code == Some(1), || {
            format!(
                "{client:?} without a client certificate: {:?} {}{}",
                out.code, out.stdout, out.stderr
            )
        });
    }
    let out = with_cert(&["install", &new]);
    w.check(out.code == Some(0), || {
        format!(
            "with the client certificate: {:?} {}{}",
            out.code, out.stdout, out.stderr
        )
    });
    w.check(
        out.stdout.lines().filter(|l| l.contains(" ok ")).count() == 2,
        || format!("both members confirm over TLS: {}", out.stdout),
    );
    let log = w.node(0).daemon.log();
    w.check(!log.contains("plain-text rpc"), || {
        "a TLS syncer warned about plain text".to_owned()
    });
}
