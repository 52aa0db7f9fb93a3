//! Python happy paths: what learners and formula tools do.

use std::time::Duration;

use orrery_sandbox::python::PythonRequest;
use orrery_sandbox::{Limit, LimitsRequest, Outcome, Stream};

use crate::common::{self, error, ok, run};

#[tokio::test]
async fn arithmetic_and_final_expression_value() {
    let rt = common::python().await;
    let r = run(&rt, "x = 6 * 7\nprint(x)\nx + 0.5").await;
    assert_eq!(ok(&r), "42\n");
    assert_eq!(r.value.as_deref(), Some("42.5"));

    let r = run(&rt, "print(sum(range(1000)))").await;
    assert_eq!(ok(&r), "499500\n");
    assert_eq!(r.value, None, "print() returns None, which is not shown");

    let r = run(&rt, "'a' * 3").await;
    assert_eq!(r.value.as_deref(), Some("'aaa'"));
}

#[tokio::test]
async fn allowed_modules_work() {
    let rt = common::python().await;
    let code = r#"
import math, json, datetime, statistics, itertools, functools, collections, re, string, heapq, bisect
from decimal import Decimal
from fractions import Fraction
import random
print(math.sqrt(16), math.pi > 3)
print(json.dumps({"a": [1, 2]}, sort_keys=True))
print(datetime.date(2024, 2, 29) + datetime.timedelta(days=1))
print(datetime.datetime.strptime("2024-01-02", "%Y-%m-%d").year)
print(statistics.mean([1, 2, 3, 4]))
print(list(itertools.islice(itertools.count(5), 3)))
print(functools.reduce(lambda a, b: a * b, range(1, 6)))
print(collections.Counter("hello").most_common(1))
print(re.findall(r"\d+", "a1b22c333"))
print(string.ascii_lowercase[:5], "{} + {}".format(1, 2), "{x}".format_map({"x": 9}))
h = [5, 1, 3]; heapq.heapify(h); print(heapq.heappop(h), bisect.bisect([1, 3, 5], 4))
print(Decimal("0.1") + Decimal("0.2"), Fraction(1, 3) * 3)
r = random.Random(42); print(0 <= random.random() < 1, r.randint(1, 6) in range(1, 7))
"#;
    let r = run(&rt, code).await;
    let expected = "4.0 True\n{\"a\": [1, 2]}\n2024-03-01\n2024\n2.5\n[5, 6, 7]\n120\n[('l', 2)]\n\
                    ['1', '22', '333']\nabcde 1 + 2 9\n1 2\n0.3 1\nTrue True\n";
    assert_eq!(ok(&r), expected);
}

#[tokio::test]
async fn classes_functions_and_comprehensions() {
    let rt = common::python().await;
    let code = r#"
class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y
    def __repr__(self):
        return f"Point({self.x}, {self.y})"
class Point3(Point):
    def __init__(self, x, y, z):
        super().__init__(x, y)
        self.z = z
def _helper(values):
    return {v: v * v for v in values if v % 2}
for _ in range(2):
    pass
print(_helper(range(5)), Point3(1, 2, 3).z)
Point(1, 2)
"#;
    let r = run(&rt, code).await;
    assert_eq!(ok(&r), "{1: 1, 3: 9} 3\n");
    assert_eq!(r.value.as_deref(), Some("Point(1, 2)"));
}

#[tokio::test]
async fn unicode_output() {
    let rt = common::python().await;
    let r = run(&rt, "print('héllo wörld ✓ 日本語 🚀')\n'ü'").await;
    assert_eq!(ok(&r), "héllo wörld ✓ 日本語 🚀\n");
    assert_eq!(r.value.as_deref(), Some("'ü'"));
}

#[tokio::test]
async fn stdin_feeds_input() {
    let rt = common::python().await;
    let request = PythonRequest {
        stdin: Some("Ada\n36\n".into()),
        ..PythonRequest::new("name = input()\nage = int(input('age? '))\nprint(f'{name} is {age}')")
    };
    let r = rt.execute(request).await.unwrap();
    assert_eq!(ok(&r), "age? Ada is 36\n");

    let r = run(&rt, "input()").await;
    let (kind, message) = error(&r);
    assert_eq!(
        (kind, message),
        ("NameError", "name 'input' is not defined"),
        "no stdin, no input()"
    );
}

#[tokio::test]
async fn exceptions_show_only_user_lines() {
    let rt = common::python().await;
    let r = run(&rt, "def f(x):\n    return 1 / x\n\nprint('before')\nf(0)").await;
    assert_eq!(r.stdout, "before\n");
    let Outcome::Error {
        error_type,
        message,
        traceback,
    } = &r.outcome
    else {
        panic!("{r:#?}")
    };
    assert_eq!(error_type, "ZeroDivisionError");
    assert_eq!(message, "division by zero");
    let traceback = traceback.as_deref().unwrap();
    assert_eq!(
        traceback,
        "Traceback (most recent call last):\n  File \"<code>\", line 5, in <module>\n    f(0)\n  \
         File \"<code>\", line 2, in f\n    return 1 / x\nZeroDivisionError: division by zero"
    );
    assert!(
        !traceback.contains("orrery_runner"),
        "no sandbox frames leak"
    );

    let r = run(&rt, "print('unclosed'").await;
    assert_eq!(error(&r).0, "SyntaxError");

    let r = run(&rt, "import os").await;
    let (kind, message) = error(&r);
    assert_eq!(kind, "ImportError");
    assert!(message.contains("'os' is not allowed"), "{message}");
}

#[tokio::test]
async fn output_streams_while_running_and_stdin_can_follow() {
    let rt = common::python().await;
    let request = PythonRequest {
        interactive: true,
        ..PythonRequest::new(
            "print('ready')\nline = input()\nprint('got', line)\nline = input()\nprint('then', line)",
        )
    };
    let mut exec = rt.spawn(request).await.unwrap();
    let first = exec.next_output().await.unwrap();
    assert_eq!(
        (first.stream, first.data.as_str()),
        (Stream::Stdout, "ready\n"),
        "streamed before the end"
    );
    assert!(exec.write_stdin("one\n"));
    let mut seen = String::new();
    while !seen.contains("got one") {
        seen.push_str(&exec.next_output().await.unwrap().data);
    }
    exec.write_stdin("two\n");
    exec.close_stdin();
    let r = exec.wait().await;
    assert_eq!(ok(&r), "ready\ngot one\nthen two\n");
}

#[tokio::test]
async fn cancel_stops_a_waiting_program() {
    let rt = common::python().await;
    let request = PythonRequest {
        interactive: true,
        ..PythonRequest::new("print('waiting')\ninput()")
    };
    let mut exec = rt.spawn(request).await.unwrap();
    assert_eq!(exec.next_output().await.unwrap().data, "waiting\n");
    exec.cancel();
    let r = exec.wait().await;
    assert_eq!(r.outcome, Outcome::Cancelled);
    assert!(r.duration < Duration::from_secs(2));
}

#[tokio::test]
async fn requests_may_lower_limits_but_not_raise_them() {
    let rt = common::python().await;
    let request = PythonRequest {
        limits: LimitsRequest {
            wall_time: Some(Duration::from_millis(300)),
            ..LimitsRequest::default()
        },
        ..PythonRequest::new("while True:\n    pass")
    };
    let r = rt.execute(request).await.unwrap();
    assert_eq!(common::limit(&r), Limit::WallTime);
    assert_eq!(r.limit_hit().unwrap().limit, 300);
    assert!(r.duration < Duration::from_secs(2), "{:?}", r.duration);

    let big = "x = 1\n".repeat(20_000); // 120 KB > 64 KiB
    let r = run(&rt, &big).await;
    assert_eq!(common::limit(&r), Limit::CodeSize);

    let request = PythonRequest {
        limits: LimitsRequest {
            code_bytes: Some(1 << 30),
            ..LimitsRequest::default()
        },
        ..PythonRequest::new(big)
    };
    let r = rt.execute(request).await.unwrap();
    assert_eq!(
        r.limit_hit().unwrap().limit,
        64 * 1024,
        "capped at the configured maximum"
    );
}

#[tokio::test]
async fn every_execution_gets_fresh_state_and_randomness() {
    let rt = common::python().await;
    let a = run(&rt, "import random\nprint(random.random())\nleak = 1").await;
    let b = run(&rt, "import random\nprint(random.random())").await;
    assert_ne!(
        ok(&a),
        ok(&b),
        "children must not share the zygote's random sequence"
    );
    let r = run(&rt, "leak").await;
    assert_eq!(
        error(&r).0,
        "NameError",
        "nothing survives between executions"
    );
}

#[tokio::test]
async fn a_dead_zygote_is_replaced() {
    let rt = common::python().await;
    let request = PythonRequest {
        interactive: true,
        ..PythonRequest::new("print('up')\ninput()")
    };
    let mut running = rt.spawn(request).await.unwrap();
    assert_eq!(running.next_output().await.unwrap().data, "up\n");
    rt.kill_zygote().await;
    let r = running.wait().await;
    assert!(matches!(r.outcome, Outcome::Crashed { .. }), "{r:#?}");
    // Give the reader task a moment to see the socket close.
    let mut answer = None;
    for _ in 0..50 {
        if let Ok(r) = rt.execute(PythonRequest::new("print('back')")).await
            && r.outcome == Outcome::Completed
        {
            answer = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(answer.expect("a new zygote answers").stdout, "back\n");
}
