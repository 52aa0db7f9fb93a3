//! The module store: upload once, run many times by id, survive restarts.

use orrery_sandbox::wasm::{ModuleStore, ModuleStoreConfig, WasmKind, WasmRequest};
use orrery_sandbox::{Outcome, SandboxError};

use crate::wasm::{HELLO_WAT, guest_component, runtime, shared};

#[tokio::test]
async fn upload_list_run_delete_and_persist() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let store = ModuleStore::open(ModuleStoreConfig::new(dir.path()), rt.clone()).unwrap();
    assert!(store.list().is_empty());

    let info = store
        .upload(HELLO_WAT.as_bytes().to_vec(), Some("hello".into()))
        .await
        .unwrap();
    assert_eq!(info.kind, WasmKind::Module);
    assert_eq!(info.id.len(), 64);
    assert_eq!(
        store
            .upload(HELLO_WAT.as_bytes().to_vec(), None)
            .await
            .unwrap()
            .id,
        info.id,
        "same bytes, same id"
    );
    assert_eq!(store.list(), vec![info.clone()]);
    assert_eq!(store.get(&info.id).unwrap().name.as_deref(), Some("hello"));

    for _ in 0..3 {
        let r = store.run(&info.id, WasmRequest::default()).await.unwrap();
        assert_eq!(
            (r.outcome.clone(), r.stdout.as_str()),
            (Outcome::Completed, "hello from wat\n")
        );
    }
    assert_eq!(
        rt.compilations(),
        1,
        "validated once at upload, never compiled again"
    );

    // A new process: a new runtime and store over the same directory.
    drop(store);
    let reopened = ModuleStore::open(ModuleStoreConfig::new(dir.path()), runtime()).unwrap();
    assert_eq!(reopened.list(), vec![info.clone()]);
    let r = reopened
        .run(&info.id, WasmRequest::default())
        .await
        .unwrap();
    assert_eq!(r.stdout, "hello from wat\n");

    reopened.delete(&info.id).unwrap();
    assert!(reopened.list().is_empty());
    assert!(matches!(
        reopened.run(&info.id, WasmRequest::default()).await,
        Err(SandboxError::ModuleNotFound(_))
    ));
    assert!(matches!(
        reopened.delete(&info.id),
        Err(SandboxError::ModuleNotFound(_))
    ));
    assert!(matches!(
        reopened.get("../../etc/passwd"),
        Err(SandboxError::ModuleNotFound(_))
    ));
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "delete removes the files: {left:?}");
}

#[tokio::test]
async fn components_can_be_stored_too() {
    let dir = tempfile::tempdir().unwrap();
    let store = ModuleStore::open(ModuleStoreConfig::new(dir.path()), shared()).unwrap();
    let info = store
        .upload(guest_component().to_vec(), None)
        .await
        .unwrap();
    assert_eq!(info.kind, WasmKind::Component);
    let request = WasmRequest {
        args: vec!["hello".into()],
        stdin: b"x".to_vec(),
        ..WasmRequest::default()
    };
    let r = store.run(&info.id, request).await.unwrap();
    assert!(r.stdout.starts_with("hello from a component"), "{r:#?}");
}

#[tokio::test]
async fn bad_uploads_are_refused_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ModuleStoreConfig::new(dir.path());
    config.max_module_bytes = 1024;
    config.max_total_bytes = 300;
    let store = ModuleStore::open(config, runtime()).unwrap();

    let garbage = store.upload(b"definitely not wasm".to_vec(), None).await;
    assert!(
        matches!(&garbage, Err(SandboxError::InvalidModule(m)) if m.contains("not WebAssembly")),
        "{garbage:?}"
    );
    let no_start = store.upload(b"(module (memory 1))".to_vec(), None).await;
    assert!(
        matches!(&no_start, Err(SandboxError::InvalidModule(m)) if m.contains("_start")),
        "{no_start:?}"
    );
    let big = store.upload(vec![0; 2048], None).await;
    assert!(matches!(
        big,
        Err(SandboxError::ModuleTooLarge {
            size: 2048,
            limit: 1024
        })
    ));
    let full = store.upload(HELLO_WAT.as_bytes().to_vec(), None).await;
    assert!(
        matches!(full, Err(SandboxError::StoreFull { limit: 300 })),
        "{full:?}"
    );
    assert!(store.list().is_empty());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
