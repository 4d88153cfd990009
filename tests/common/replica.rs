//! Reading what one node holds, without a `get`.

use std::time::Duration;

use super::secrets;

/// What node `port` holds for `key` as its own replica, as text, read
/// straight from it (`read_replica`, never a `get`, which would repair what
/// it reads); None when it does not answer.
#[allow(dead_code)]
pub fn replica_values(rt: &tokio::runtime::Runtime, port: u16, key: &str) -> Option<Vec<String>> {
    rt.block_on(async {
        let node: dynamo::types::NodeId = format!("127.0.0.1:{port}").parse().unwrap();
        let hello = dynamo::security::Hello::Client(Some(secrets().admin_token.clone()));
        let conn = dynamo::rpc::connect_as(&node, Duration::from_secs(2), hello)
            .await
            .ok()?;
        let obj = conn
            .client()
            .read_replica(
                dynamo::rpc::context(Duration::from_secs(5)),
                dynamo::rpc::Addressee {
                    node,
                    identity: None,
                    from: None,
                },
                key.to_string(),
            )
            .await
            .ok()?
            .ok()?;
        Some(
            obj.values()
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .collect(),
        )
    })
}
