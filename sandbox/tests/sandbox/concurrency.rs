//! Many executions at once, some hostile: the normal ones keep answering.

use std::time::{Duration, Instant};

use orrery_sandbox::python::PythonRequest;
use orrery_sandbox::wasm::WasmRequest;
use orrery_sandbox::{LimitsRequest, Outcome};

use crate::common;
use crate::wasm;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_neighbours_do_not_stop_normal_executions() {
    let rt = common::python().await;
    let wall = LimitsRequest {
        wall_time: Some(Duration::from_secs(3)),
        ..LimitsRequest::default()
    };
    let hostile = [
        "while True:\n    pass",
        "blocks = []\nwhile True:\n    blocks.append(' ' * 10**6)",
        "while True:\n    print('flood' * 100)",
        "import re\nre.match(r'(a+)+$', 'a' * 40 + 'b')",
        "x = 2 ** (10 ** 10)",
        "def f(n):\n    return f(n + 1)\nf(0)",
    ];
    let mut hostile_tasks = Vec::new();
    for code in hostile {
        let rt = rt.clone();
        let request = PythonRequest {
            limits: wall,
            ..PythonRequest::new(code)
        };
        hostile_tasks.push(tokio::spawn(
            async move { rt.execute(request).await.unwrap() },
        ));
    }
    // Let the hostile ones get going, then run normal work beside them.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut normal = Vec::new();
    for i in 0..40u64 {
        let rt = rt.clone();
        normal.push(tokio::spawn(async move {
            let started = Instant::now();
            let r = rt
                .execute(PythonRequest::new(format!("print(sum(range({i})))")))
                .await
                .unwrap();
            (i, r, started.elapsed())
        }));
    }
    for task in normal {
        let (i, r, took) = task.await.unwrap();
        assert_eq!(r.outcome, Outcome::Completed, "{r:#?}");
        assert_eq!(r.stdout, format!("{}\n", (0..i).sum::<u64>()));
        assert!(
            took < Duration::from_secs(2),
            "normal execution {i} took {took:?}"
        );
    }
    for task in hostile_tasks {
        let r = task.await.unwrap();
        assert!(
            matches!(r.outcome, Outcome::LimitExceeded(_) | Outcome::Error { .. }),
            "{r:#?}"
        );
    }
    assert_eq!(
        common::ok(&common::run(&rt, "print('still here')").await),
        "still here\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasm_loops_do_not_block_other_modules() {
    let rt = wasm::runtime();
    let spin = LimitsRequest {
        wall_time: Some(Duration::from_secs(2)),
        ..LimitsRequest::default()
    };
    let loops: Vec<_> = (0..2)
        .map(|_| {
            let rt = rt.clone();
            let request = WasmRequest {
                limits: spin,
                ..WasmRequest::default()
            };
            tokio::spawn(async move {
                rt.execute(
                    b"(module (func (export \"_start\") (loop (br 0))))".to_vec(),
                    request,
                )
                .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..20 {
        let started = Instant::now();
        let r = rt
            .execute(wasm::HELLO_WAT.as_bytes().to_vec(), WasmRequest::default())
            .await
            .unwrap();
        assert_eq!(r.stdout, "hello from wat\n");
        assert!(started.elapsed() < Duration::from_secs(1));
    }
    for task in loops {
        let r = task.await.unwrap().unwrap();
        assert!(r.limit_hit().is_some(), "{r:#?}");
    }
}
