//! Defence in depth, shown: with restricted builtins switched OFF (real
//! builtins, real imports), the OS wall alone stops files, sockets and
//! processes.

use std::net::TcpListener;

use orrery_sandbox::python::PythonRuntime;

use crate::common::{self, error, ok, run};

async fn unrestricted() -> PythonRuntime {
    let mut config = common::config();
    config.restricted = false;
    config.preload = ["os", "socket", "subprocess", "ctypes"]
        .map(String::from)
        .to_vec();
    PythonRuntime::start(config).await.unwrap()
}

fn assert_permission_denied(r: &orrery_sandbox::ExecutionResult, what: &str) {
    let (kind, message) = error(r);
    assert_eq!(kind, "PermissionError", "{what}: {r:#?}");
    assert!(
        message.contains("Operation not permitted"),
        "{what}: {message}"
    );
}

#[tokio::test]
async fn the_os_wall_alone_stops_files() {
    let rt = unrestricted().await;
    let isolation = rt.isolation().await;
    assert!(isolation.seccomp);
    // Real builtins really are there.
    assert_eq!(
        ok(&run(
            &rt,
            "print(type(open).__name__, __import__('os').getpid() > 0)"
        )
        .await),
        "builtin_function_or_method True\n"
    );

    assert_permission_denied(&run(&rt, "open('/etc/passwd').read()").await, "read");
    assert_permission_denied(
        &run(&rt, "import os\nos.open('/etc/hostname', os.O_RDONLY)").await,
        "os.open",
    );
    assert_permission_denied(&run(&rt, "import os\nos.listdir('/')").await, "listdir");
    let path = "/tmp/orrery-os-wall-test";
    let _ = std::fs::remove_file(path);
    assert_permission_denied(
        &run(&rt, &format!("open('{path}', 'w').write('x')")).await,
        "write",
    );
    assert!(!std::path::Path::new(path).exists());
}

#[tokio::test]
async fn the_os_wall_alone_stops_sockets() {
    let rt = unrestricted().await;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let code = format!(
        "import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=1)\ns.send(b'hi')"
    );
    assert_permission_denied(&run(&rt, &code).await, "connect");
    assert!(listener.accept().is_err(), "nothing may arrive");
}

#[tokio::test]
async fn the_os_wall_alone_stops_processes() {
    let rt = unrestricted().await;
    assert_permission_denied(&run(&rt, "import os\nos.fork()").await, "fork");
    assert_permission_denied(
        &run(&rt, "import subprocess\nsubprocess.run(['/bin/true'])").await,
        "subprocess",
    );
    assert_permission_denied(
        &run(&rt, "import os\nos.execv('/bin/true', ['true'])").await,
        "exec",
    );
    assert_permission_denied(&run(&rt, "import os\nos.kill(1, 9)").await, "kill");
    // ctypes reaches libc directly; system() cannot create a process either.
    let path = "/tmp/orrery-ctypes-test";
    let _ = std::fs::remove_file(path);
    let r = run(
        &rt,
        &format!("import ctypes\nctypes.CDLL(None).system(b'touch {path}')"),
    )
    .await;
    assert!(r.value.as_deref() != Some("0"), "system() failed: {r:#?}");
    assert!(!std::path::Path::new(path).exists());
}

#[tokio::test]
async fn the_child_holds_nothing_of_the_host() {
    assert!(std::env::var_os("PATH").is_some() && std::env::var_os("CARGO").is_some());
    let rt = unrestricted().await;
    let code = r#"
import os
print(sorted(os.environ))
open_fds = []
for fd in range(64):
    try:
        os.fstat(fd)
        open_fds.append(fd)
    except OSError:
        pass
print(open_fds)
print(os.getuid() if os.getuid() != 0 else 'root')
"#;
    let r = run(&rt, code).await;
    let lines: Vec<&str> = ok(&r).lines().collect();
    assert_eq!(
        lines[0], "['PYTHONDONTWRITEBYTECODE']",
        "no PATH, HOME, CARGO... from the host"
    );
    assert_eq!(
        lines[1], "[0, 1, 2, 3]",
        "only stdin, stdout, stderr and the result pipe"
    );
    let isolation = rt.isolation().await;
    if let Some(uid) = isolation.uid {
        assert_eq!(lines[2], uid.to_string());
    }
}

#[tokio::test]
async fn without_namespaces_seccomp_and_rlimits_still_hold() {
    // What a machine that forbids namespaces gets: no restricted builtins
    // either, only the process, its uid, rlimits and seccomp.
    let mut config = common::config();
    config.restricted = false;
    config.namespaces = false;
    config.preload = ["os", "socket"].map(String::from).to_vec();
    let rt = PythonRuntime::start(config).await.unwrap();
    let isolation = rt.isolation().await;
    assert!(!isolation.network_namespace && !isolation.pid_namespace && !isolation.empty_root);
    assert_permission_denied(&run(&rt, "open('/etc/passwd').read()").await, "read");
    assert_permission_denied(&run(&rt, "import os\nos.fork()").await, "fork");
    assert_permission_denied(&run(&rt, "import socket\nsocket.socket()").await, "socket");
    assert_eq!(ok(&run(&rt, "print(6 * 7)").await), "42\n");
}
