//! Storage benchmark (run by `scripts/bench-storage`, as root): the costs of the pool's
//! operations on a layer holding 100 MiB, against the two alternatives measured in the
//! same run — a full copy (what a snapshot costs without copy-on-write) and one ext4 image
//! per sandbox (format + loop mount: the other way to enforce a cap on this kernel).
//! Prints medians in milliseconds. Time is the kernel's: a debug build measures the same.

use std::fs;
use std::process::Command;
use std::time::Instant;

use safehouse_storage::{Kind, Pool, PoolOptions};

const MIB: u64 = 1 << 20;
const ROUNDS: usize = 11;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn time(f: impl FnOnce()) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_secs_f64() * 1000.0
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("run a tool");
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn main() {
    let data = std::env::temp_dir().join(format!("safehouse-bench-storage-{}", std::process::id()));
    fs::create_dir_all(&data).unwrap();
    let pool =
        Pool::open(&data, &PoolOptions { size: 2048 * MIB }).expect("open the pool (run as root with btrfs-progs)");

    let mut create = Vec::new();
    let mut remove = Vec::new();
    for i in 0..ROUNDS {
        let name = format!("empty-{i}");
        create.push(time(|| {
            pool.create(Kind::Layer, &name, 1024 * MIB).unwrap();
        }));
        remove.push(time(|| {
            pool.remove(Kind::Layer, &name).unwrap();
        }));
    }

    let src = pool.create(Kind::Layer, "src", 1024 * MIB).unwrap();
    let chunk = vec![0x5au8; MIB as usize];
    let mut data_file = Vec::with_capacity(100 * MIB as usize);
    for _ in 0..100 {
        data_file.extend_from_slice(&chunk);
    }
    fs::write(src.join("data"), &data_file).unwrap();
    pool.sync().unwrap();

    let mut snapshot = Vec::new();
    let mut fork10 = Vec::new();
    let mut fork10_serial = Vec::new();
    for i in 0..ROUNDS {
        // A write between rounds, so each snapshot has dirty data to flush, as in use.
        fs::write(src.join("dirty"), format!("round {i}")).unwrap();
        let name = format!("snap-{i}");
        snapshot.push(time(|| {
            pool.snapshot(Kind::Layer, "src", Kind::Snapshot, &name, None).unwrap();
        }));
        let names: Vec<String> = (0..10).map(|j| format!("fork-{i}-{j}")).collect();
        fork10.push(time(|| {
            pool.snapshot_many(Kind::Layer, "src", Kind::Layer, &names, None).unwrap();
        }));
        let serial: Vec<String> = (0..10).map(|j| format!("serial-{i}-{j}")).collect();
        fork10_serial.push(time(|| {
            for name in &serial {
                pool.snapshot(Kind::Layer, "src", Kind::Layer, name, None).unwrap();
            }
        }));
        for name in &serial {
            pool.remove(Kind::Layer, name).unwrap();
        }
        pool.remove(Kind::Snapshot, &name).unwrap();
        for j in 0..10 {
            pool.remove(Kind::Layer, &format!("fork-{i}-{j}")).unwrap();
        }
    }

    let mut copy = Vec::new();
    let dst = pool.root().join("copy");
    for _ in 0..5 {
        copy.push(time(|| {
            run(Command::new("cp").args(["-a", "--reflink=never"]).arg(&src).arg(&dst));
            run(Command::new("sync").arg("-f").arg(&dst));
        }));
        fs::remove_dir_all(&dst).unwrap();
    }

    let mut ext4 = Vec::new();
    let img = data.join("sandbox.img");
    let mnt = data.join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    for _ in 0..5 {
        let _ = fs::remove_file(&img);
        ext4.push(time(|| {
            fs::File::create(&img).unwrap().set_len(1024 * MIB).unwrap();
            run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&img));
            run(Command::new("mount").args(["-o", "loop"]).arg(&img).arg(&mnt));
        }));
        run(Command::new("umount").arg(&mnt));
    }
    let _ = fs::remove_file(&img);

    let (snap, cp) = (median(snapshot), median(copy));
    println!("storage pool: btrfs image, loop-mounted, quota groups; layer with 100 MiB written; medians of {ROUNDS} (copies: 5)");
    println!("create layer (1 GiB cap)   {:8.2} ms", median(create));
    println!("remove empty layer         {:8.2} ms", median(remove));
    println!("snapshot (100 MiB layer)   {:8.2} ms", snap);
    println!("fork x10 (one call)        {:8.2} ms", median(fork10));
    println!("fork x10 (one by one)      {:8.2} ms", median(fork10_serial));
    println!("baseline: full copy        {:8.2} ms  (snapshot is {:.3}x of it)", cp, snap / cp);
    println!("baseline: ext4 image/sandbox (mkfs + loop mount) {:8.2} ms", median(ext4));

    pool.remove(Kind::Layer, "src").unwrap();
    pool.unmount().unwrap();
    let _ = fs::remove_dir_all(&data);
}
