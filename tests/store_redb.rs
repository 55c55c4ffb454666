//! The embedded mapping store on a disk that fills up (a small tmpfs, so the test needs root
//! to mount it; CI runs as root). Regression (chaos suite,
//! `disk-full` fault): after one failed write redb refuses every later transaction until the
//! database is reopened, and the store stayed dead until the daemon restarted. Now it is
//! reopened once writing can work again, and nothing already stored is lost.

use std::path::Path;
use std::process::Command;

use syncer::store::redb::RedbStore;
use syncer::store::{Group, Mapping, MappingStore, Op};

fn mapping(n: usize) -> Mapping {
    Mapping {
        origin: "dc2".into(),
        domain: "default".into(),
        project: "default".into(),
        origin_service_id: "s-origin".into(),
        origin_instance_id: format!("o-{n}"),
        service_id: "s-local".into(),
        instance_id: format!("i-{n}-{}", "x".repeat(200)),
        fingerprint: "fp".into(),
        generation: 0,
        updated_ms: 1,
    }
}

/// `count` mappings from `from` on, one per group.
fn batch(from: usize, count: usize) -> Vec<Group> {
    (from..from + count)
        .map(|n| Group::from(Op::PutMapping(mapping(n))))
        .collect()
}

/// Mounts a tmpfs of `size` on `dir`; false when this process may not (not root).
fn mount_tmpfs(dir: &Path, size: &str) -> bool {
    Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .status()
        .is_ok_and(|s| s.success())
}

struct Unmount<'a>(&'a Path);

impl Drop for Unmount<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0).status();
    }
}

#[tokio::test]
async fn the_store_works_again_once_the_disk_has_room() {
    let tmp = tempfile::tempdir().unwrap();
    if !mount_tmpfs(tmp.path(), "2m") {
        eprintln!("skipped: mounting a tmpfs needs root (CI runs as root)");
        return;
    }
    let _unmount = Unmount(tmp.path());
    let store = RedbStore::open(tmp.path()).await.unwrap();
    store.commit(&batch(0, 10)).await.unwrap();

    // Fill the disk, then write until the store fails.
    let filler = tmp.path().join("filler");
    std::fs::write(&filler, vec![0u8; 1 << 20]).ok();
    let mut next = 10;
    let mut failed = None;
    for _ in 0..200 {
        match store.commit(&batch(next, 200)).await {
            Ok(()) => next += 200,
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    let failed = failed.expect("a full disk makes a commit fail");
    assert!(failed.to_string().contains("No space left"), "{failed}");
    // Still full: still failing, with the disk named, not a panic.
    assert!(store.commit(&batch(next, 200)).await.is_err());

    // Room again: the next commits work, and everything committed before is there.
    std::fs::remove_file(&filler).unwrap();
    store
        .commit(&batch(next, 5))
        .await
        .expect("the store works again");
    let stored = store.load().await.unwrap();
    assert_eq!(stored.mappings.len(), next + 5);
}
