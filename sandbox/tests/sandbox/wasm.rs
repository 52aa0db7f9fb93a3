//! WebAssembly: WAT modules (WASI preview 1), a Rust component (preview 2)
//! built for wasm32-wasip2 by the test, limits, and the escape attempts.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use orrery_sandbox::wasm::{WasmConfig, WasmKind, WasmRequest, WasmRuntime};
use orrery_sandbox::{ExecutionResult, Limit, LimitsRequest, Outcome, SandboxError};

use crate::common;

pub const HELLO_WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "hello from wat\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 15))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;

const LOOP_WAT: &str = r#"(module (func (export "_start") (loop (br 0))))"#;

const GROW_WAT: &str = r#"(module
  (memory 1)
  (func (export "_start") (loop (drop (memory.grow (i32.const 16))) (br 0))))"#;

const TABLE_WAT: &str = r#"(module
  (table 1 funcref)
  (func (export "_start") (loop (drop (table.grow (ref.null func) (i32.const 1000))) (br 0))))"#;

const FLOOD_WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const 4096))
    (loop (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))) (br 0))))"#;

/// Calls path_open on fd 3 (the first preopen, if there were one) and exits
/// with the errno it got.
const OPEN_WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "etc/passwd")
  (func (export "_start")
    (call $proc_exit
      (call $path_open (i32.const 3) (i32.const 0) (i32.const 16) (i32.const 10)
                       (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 64)))))"#;

pub fn runtime() -> WasmRuntime {
    WasmRuntime::new(WasmConfig::default()).unwrap()
}

/// One runtime shared by the tests, so the guest component (slow to compile
/// in a debug build of cranelift) is compiled once.
pub fn shared() -> WasmRuntime {
    static RT: OnceLock<WasmRuntime> = OnceLock::new();
    RT.get_or_init(|| {
        let rt = runtime();
        rt.compile(guest_component()).expect("the guest compiles");
        rt
    })
    .clone()
}

/// The Rust guest, compiled for wasm32-wasip2 (once per test run).
pub fn guest_component() -> &'static [u8] {
    static WASM: OnceLock<Vec<u8>> = OnceLock::new();
    WASM.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/wasi-guest");
        let target_dir = std::env::var_os("CARGO_TARGET_DIR")
            .map_or_else(
                || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"),
                PathBuf::from,
            )
            .join("wasi-guest");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "--release",
                "--target",
                "wasm32-wasip2",
                "--manifest-path",
            ])
            .arg(dir.join("Cargo.toml"))
            .arg("--target-dir")
            .arg(&target_dir)
            .status()
            .expect("cargo runs");
        assert!(
            status.success(),
            "building the guest failed (is the wasm32-wasip2 target installed?)"
        );
        std::fs::read(target_dir.join("wasm32-wasip2/release/orrery-wasi-guest.wasm")).unwrap()
    })
}

async fn run(rt: &WasmRuntime, wasm: &[u8], request: WasmRequest) -> ExecutionResult {
    rt.execute(wasm.to_vec(), request)
        .await
        .expect("valid program")
}

fn with_args(args: &[&str]) -> WasmRequest {
    WasmRequest {
        args: args.iter().map(ToString::to_string).collect(),
        ..WasmRequest::default()
    }
}

#[tokio::test]
async fn wat_module_prints_and_is_compiled_once() {
    let rt = runtime();
    let r = run(&rt, HELLO_WAT.as_bytes(), WasmRequest::default()).await;
    assert_eq!(r.outcome, Outcome::Completed, "{r:#?}");
    assert_eq!(r.stdout, "hello from wat\n");
    assert_eq!(r.exit_code, Some(0));
    assert_eq!(rt.compilations(), 1);
    let again = run(&rt, HELLO_WAT.as_bytes(), WasmRequest::default()).await;
    assert_eq!(again.stdout, "hello from wat\n");
    assert_eq!(rt.compilations(), 1, "the second run used the cache");
}

#[tokio::test]
async fn rust_component_gets_args_stdin_and_output() {
    let rt = shared();
    let request = WasmRequest {
        stdin: b"shout this\n".to_vec(),
        ..with_args(&["hello", "a", "b c"])
    };
    let r = run(&rt, guest_component(), request).await;
    assert_eq!(r.outcome, Outcome::Completed, "{r:#?}");
    assert_eq!(
        r.stdout,
        "hello from a component, args=[\"a\", \"b c\"]\nstdin=SHOUT THIS\n"
    );
    assert_eq!(r.stderr, "to stderr ✓\n");
    assert_eq!(r.exit_code, Some(0));
    assert_eq!(
        rt.compile(guest_component()).unwrap().kind(),
        WasmKind::Component
    );

    // WASI 0.2's wasi:cli/exit carries success or failure, not a number.
    let r = run(&rt, guest_component(), with_args(&["exit"])).await;
    assert_eq!(
        (r.outcome.clone(), r.exit_code),
        (Outcome::Completed, Some(1)),
        "{r:#?}"
    );
}

#[tokio::test]
async fn component_cannot_reach_files_sockets_or_env() {
    let rt = shared();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let _ = std::fs::remove_file("/tmp/orrery-wasm-escape");
    let r = run(&rt, guest_component(), with_args(&["escape", &addr])).await;
    assert_eq!(r.outcome, Outcome::Completed, "{r:#?}");
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert!(lines[0].starts_with("read denied"), "{lines:?}");
    assert!(lines[1].starts_with("write denied"), "{lines:?}");
    assert!(lines[2].starts_with("connect denied"), "{lines:?}");
    assert_eq!(lines[3], "env vars: 0");
    assert!(listener.accept().is_err(), "nothing may arrive");
    assert!(!std::path::Path::new("/tmp/orrery-wasm-escape").exists());
}

#[tokio::test]
async fn wat_module_cannot_open_a_file() {
    let r = run(&runtime(), OPEN_WAT.as_bytes(), WasmRequest::default()).await;
    assert_eq!(r.outcome, Outcome::Completed);
    assert_eq!(
        r.exit_code,
        Some(8),
        "path_open fails with EBADF: there is no preopened directory"
    );
}

#[tokio::test]
async fn infinite_loops_hit_the_deadline_or_fuel() {
    let rt = shared();
    let quick = LimitsRequest {
        wall_time: Some(Duration::from_millis(300)),
        ..LimitsRequest::default()
    };
    let r = run(
        &rt,
        LOOP_WAT.as_bytes(),
        WasmRequest {
            limits: quick,
            ..WasmRequest::default()
        },
    )
    .await;
    assert_eq!(common::limit(&r), Limit::WallTime);
    assert!(r.duration < Duration::from_secs(2), "{:?}", r.duration);

    let little_fuel = LimitsRequest {
        fuel: Some(1_000_000),
        ..LimitsRequest::default()
    };
    let r = run(
        &rt,
        LOOP_WAT.as_bytes(),
        WasmRequest {
            limits: little_fuel,
            ..WasmRequest::default()
        },
    )
    .await;
    assert_eq!(common::limit(&r), Limit::Fuel);

    let r = run(
        &rt,
        guest_component(),
        WasmRequest {
            limits: quick,
            ..with_args(&["spin"])
        },
    )
    .await;
    assert_eq!(common::limit(&r), Limit::WallTime, "{r:#?}");
}

#[tokio::test]
async fn memory_and_table_bombs_hit_their_caps() {
    let rt = shared();
    let r = run(&rt, GROW_WAT.as_bytes(), WasmRequest::default()).await;
    assert_eq!(common::limit(&r), Limit::Memory);
    assert_eq!(r.limit_hit().unwrap().limit, 128 * 1024 * 1024);

    let r = run(&rt, TABLE_WAT.as_bytes(), WasmRequest::default()).await;
    assert_eq!(common::limit(&r), Limit::Table);

    let r = run(&rt, guest_component(), with_args(&["alloc"])).await;
    assert_eq!(common::limit(&r), Limit::Memory, "{r:#?}");
}

#[tokio::test]
async fn output_flood_is_truncated() {
    let r = run(&runtime(), FLOOD_WAT.as_bytes(), WasmRequest::default()).await;
    assert_eq!(common::limit(&r), Limit::Output);
    assert!(r.output_truncated);
    assert!(r.stdout.len() <= 64 * 1024);
}

#[tokio::test]
async fn invalid_programs_are_refused_with_the_reason() {
    let rt = runtime();
    let cases: [(&[u8], &str); 5] = [
        (b"\x7fELF garbage", "not WebAssembly"),
        (b"\0asm\x01\0\0\0\xff\xff", "section"),
        (b"(module (func (export \"main\")))", "_start"),
        (
            b"(module (import \"env\" \"f\" (func)) (func (export \"_start\")))",
            "env::f",
        ),
        (b"(component)", "wasi:cli/run"),
    ];
    for (bytes, needle) in cases {
        match rt.execute(bytes.to_vec(), WasmRequest::default()).await {
            Err(SandboxError::InvalidModule(message)) => {
                assert!(message.contains(needle), "{needle}: {message}")
            }
            other => panic!("{needle}: expected InvalidModule, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn output_streams_while_the_guest_runs_and_cancel_stops_it() {
    let rt = shared();
    // The output arrives as chunks on the handle, then the result.
    let mut exec = rt
        .start(guest_component().to_vec(), with_args(&["hello"]))
        .await
        .unwrap();
    let mut seen = String::new();
    while let Some(chunk) = exec.next_output().await {
        seen.push_str(&chunk.data);
    }
    assert!(seen.contains("hello from a component"), "{seen}");
    assert_eq!(exec.wait().await.outcome, Outcome::Completed);

    let spin = LimitsRequest {
        wall_time: Some(Duration::from_secs(30)),
        ..LimitsRequest::default()
    };
    let exec = rt
        .start(
            LOOP_WAT.as_bytes().to_vec(),
            WasmRequest {
                limits: spin,
                ..WasmRequest::default()
            },
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let cancelled_at = std::time::Instant::now();
    exec.cancel();
    let r = exec.wait().await;
    assert_eq!(r.outcome, Outcome::Cancelled, "{r:#?}");
    assert!(cancelled_at.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn streamed_chunks_arrive_before_the_end() {
    // A flood: chunks arrive while the guest is still writing, then the
    // output limit (shared by stdout and stderr) stops it.
    let mut exec = runtime()
        .start(FLOOD_WAT.as_bytes().to_vec(), WasmRequest::default())
        .await
        .unwrap();
    let first = exec.next_output().await.expect("a chunk");
    assert_eq!(first.stream, orrery_sandbox::Stream::Stdout);
    let r = exec.wait().await;
    assert_eq!(common::limit(&r), Limit::Output);
    assert_eq!(r.stdout.len(), 64 * 1024, "kept exactly up to the limit");
}
