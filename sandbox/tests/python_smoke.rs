mod common;

#[tokio::test]
async fn prints() {
    let rt = common::python().await;
    println!("{:?}", rt.isolation().await);
    let r = common::run(&rt, "print(sum(range(1000)))").await;
    println!("{r:#?}");
    assert_eq!(common::ok(&r), "499500\n");
}
