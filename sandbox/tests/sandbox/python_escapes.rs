//! The escape suite, restricted builtins on: what an attacker would try.
//! Each attempt ends in a clear result, and the runtime keeps serving.

use std::net::TcpListener;
use std::time::Duration;

use orrery_sandbox::python::{PythonRequest, PythonRuntime};
use orrery_sandbox::{ExecutionResult, Limit, LimitsRequest};

use crate::common::{self, error, ok, rejected, run};

async fn run_with_wall(rt: &PythonRuntime, code: &str, wall_ms: u64) -> ExecutionResult {
    let limits = LimitsRequest {
        wall_time: Some(Duration::from_millis(wall_ms)),
        ..LimitsRequest::default()
    };
    rt.execute(PythonRequest {
        limits,
        ..PythonRequest::new(code)
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn dunder_walks_are_rejected_before_running() {
    let rt = common::python().await;
    let attempts = [
        "().__class__.__base__.__subclasses__()",
        "[].__class__.__mro__[1].__subclasses__()",
        "type.__subclasses__(object)",
        "__builtins__['open']('/etc/passwd')",
        "__builtins__",
        "__import__('os').system('id')",
        "print.__self__",
        "(lambda: 0).__globals__",
        "def g():\n    yield 1\ngen = g()\ngen.gi_frame.f_back.f_globals",
        "def g():\n    yield 1\ng().gi_code",
        "try:\n    1/0\nexcept Exception as e:\n    e.__traceback__.tb_frame.f_back",
        "import random\nrandom._os.system('id')",
        "import random\nrandom._inst",
        "import _io",
        "match 1:\n    case int(__class__=c):\n        print(c)",
        "def f(_secret=1):\n    pass",
    ];
    for code in attempts {
        let r = run(&rt, code).await;
        let reason = rejected(&r);
        assert!(reason.contains("not allowed"), "{code}: {reason}");
        assert_eq!(r.stdout, "", "{code}: nothing ran");
    }
}

#[tokio::test]
async fn runtime_attribute_gadgets_are_refused() {
    let rt = common::python().await;
    // getattr and friends refuse what the AST check would have refused.
    let refused_at_run_time = [
        "getattr((), '__class__')",
        "getattr(getattr, '__self__')",
        "def g():\n    yield 1\ngetattr(g(), 'gi_frame')",
        "hasattr(1, '__class__')",
        "class A:\n    pass\nsetattr(A(), '__class__', int)",
        "delattr(print, '__module__')",
    ];
    for code in refused_at_run_time {
        let r = run(&rt, code).await;
        assert!(rejected(&r).contains("not allowed"), "{code}");
    }
    // A str subclass cannot lie to the name check.
    let liar = "class Liar(str):\n    def startswith(self, *a):\n        return False\ngetattr((), Liar('__class__'))";
    assert_eq!(error(&run(&rt, liar).await).0, "TypeError");
}

#[tokio::test]
async fn format_string_attribute_access_is_refused() {
    let rt = common::python().await;
    let attempts = [
        "'{0.__class__}'.format(1)",
        "'{0.__class__.__mro__}'.format(1)",
        "'{x.__init__.__globals__}'.format_map({'x': print})",
        "str.format('{0.__class__}', 1)",
        "f = getattr('{0.__class__}', 'format')\nf(1)",
        "'{0:{1.__class__}}'.format(1, 2)",
        "type('')('{0.__class__}').format(1)",
        "class S(str):\n    pass\nsuper(S, S('{0.__class__}')).format(1)",
        "class S(str):\n    def __str__(self):\n        return 'harmless'\nS('{0.__class__}').format(1)",
        "import functools\nfunctools.partial(str.format, '{0.__class__}')(1)",
    ];
    for code in attempts {
        let r = run(&rt, code).await;
        assert!(
            rejected(&r).contains("'__class__'") || rejected(&r).contains("not allowed"),
            "{code}"
        );
    }
    // Ordinary formatting still works, attribute fields included.
    let r = run(
        &rt,
        "import datetime\n'{0.year}-{1[0]} {x:>4}'.format(datetime.date(2024, 1, 1), [7], x=5)",
    )
    .await;
    assert_eq!(r.value.as_deref(), Some("'2024-7    5'"));
}

#[tokio::test]
async fn allowed_modules_do_not_lead_to_os_or_sys() {
    let rt = common::python().await;
    let missing = [
        "import statistics\nstatistics.sys",
        "import json\njson.decoder",
        "import re\nre.sre_compile",
        "import collections\ncollections.UserString",
        "import functools\nfunctools.update_wrapper",
        "import string\nstring.Formatter",
        "import datetime\ndatetime.sys",
        "import random\nrandom.SystemRandom",
    ];
    for code in missing {
        let r = run(&rt, code).await;
        assert_eq!(error(&r).0, "AttributeError", "{code}: {r:#?}");
    }
    for module in [
        "os",
        "sys",
        "subprocess",
        "ctypes",
        "socket",
        "importlib",
        "builtins",
        "operator",
        "gc",
    ] {
        let r = run(&rt, &format!("import {module}")).await;
        assert_eq!(error(&r).0, "ImportError", "{module}");
    }
}

#[tokio::test]
async fn dangerous_builtins_do_not_exist() {
    let rt = common::python().await;
    let names = [
        "open",
        "eval",
        "exec",
        "compile",
        "globals",
        "locals",
        "vars",
        "breakpoint",
        "input",
        "help",
        "exit",
    ];
    for name in names {
        let r = run(&rt, name).await;
        assert_eq!(
            error(&r),
            (
                "NameError",
                format!("name '{name}' is not defined").as_str()
            )
        );
    }
    let r = run(&rt, "open('/etc/passwd').read()").await;
    assert_eq!(error(&r).0, "NameError");
    let r = run(&rt, "open('/tmp/orrery-escape', 'w').write('x')").await;
    assert_eq!(error(&r).0, "NameError");
    assert!(!std::path::Path::new("/tmp/orrery-escape").exists());
}

#[tokio::test]
async fn no_socket_no_process_no_ctypes() {
    let rt = common::python().await;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let code = format!(
        "import socket\ns = socket.create_connection(('127.0.0.1', {port}))\ns.send(b'hi')"
    );
    let r = run(&rt, &code).await;
    assert_eq!(error(&r).0, "ImportError");
    assert!(listener.accept().is_err(), "nothing may arrive");

    for code in [
        "import os\nos.fork()",
        "from os import system",
        "import subprocess\nsubprocess.run(['id'])",
        "import ctypes",
    ] {
        assert_eq!(error(&run(&rt, code).await).0, "ImportError", "{code}");
    }
}

#[tokio::test]
async fn cpu_and_memory_hogs_hit_their_limits() {
    let rt = common::python().await;
    let r = run_with_wall(&rt, "while True:\n    pass", 1000).await;
    assert_eq!(common::limit(&r), Limit::WallTime);

    let r = run_with_wall(&rt, "import re\nre.match(r'(a+)+$', 'a' * 40 + 'b')", 1000).await;
    assert_eq!(
        common::limit(&r),
        Limit::WallTime,
        "catastrophic backtracking is cut by the deadline"
    );

    let r = run(&rt, "x = 2 ** (10 ** 10)").await;
    assert!(
        matches!(
            common::limit(&r),
            Limit::Memory | Limit::CpuTime | Limit::WallTime
        ),
        "{r:#?}"
    );

    let r = run(
        &rt,
        "blocks = []\nwhile True:\n    blocks.append(' ' * 10**6)",
    )
    .await;
    assert_eq!(common::limit(&r), Limit::Memory);
    assert_eq!(r.limit_hit().unwrap().limit, 128 * 1024 * 1024);

    let r = run(&rt, "'x' * 10**10").await;
    assert_eq!(common::limit(&r), Limit::Memory);

    let r = run(&rt, "def f(n):\n    return f(n + 1)\nf(0)").await;
    let (kind, _) = error(&r);
    assert_eq!(kind, "RecursionError");
    let traceback = match &r.outcome {
        orrery_sandbox::Outcome::Error { traceback, .. } => traceback.clone().unwrap(),
        _ => unreachable!(),
    };
    assert!(
        traceback.contains("frames omitted"),
        "long tracebacks are cut: {traceback}"
    );

    // Still serving.
    assert_eq!(ok(&run(&rt, "print(1 + 1)").await), "2\n");
}

#[tokio::test]
async fn output_flood_is_truncated_and_stopped() {
    let rt = common::python().await;
    let r = run(&rt, "while True:\n    print('x' * 1000)").await;
    assert_eq!(common::limit(&r), Limit::Output);
    assert!(r.output_truncated);
    assert_eq!(r.stdout.len() + r.stderr.len(), 64 * 1024);
    assert!(
        r.duration < Duration::from_secs(3),
        "stopped at the limit, not at the deadline: {:?}",
        r.duration
    );
}
