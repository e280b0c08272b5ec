//! What a nestling client must get from a service with `tests/nest/user-service.mjs`'s
//! handlers, whichever transport carries the calls.

use futures_util::StreamExt;
use nestling::{Client, ClientError};
use serde_json::{json, Value};

/// Requests (string and object patterns, unicode), a streamed reply, an error object, and
/// events reaching both handlers of a string pattern and an object pattern's handler.
pub async fn nestling_client_gets_nests_answers(client: &Client) {
    let sum: i64 = client.send("sum", &[1, 2, 3]).await.unwrap();
    assert_eq!(sum, 6);
    let sum: i64 = client.send(json!({"cmd": "sum"}), &[4, 5]).await.unwrap();
    assert_eq!(sum, 9);
    let echoed: Value = client.send("echo", &json!({"t": "求和😀"})).await.unwrap();
    assert_eq!(echoed, json!({"t": "求和😀"}));
    let items: Vec<u32> = client
        .send_stream::<_, _, u32>("ticks", &3)
        .await
        .unwrap()
        .map(|i| i.unwrap())
        .collect()
        .await;
    assert_eq!(items, [0, 1, 2]);
    match client.send::<_, _, i64>("fail_obj", &()).await {
        Err(ClientError::Remote { error, .. }) => {
            assert_eq!(error.value(), &json!({"code": 42, "message": "m"}))
        }
        other => panic!("expected Nest's error, got {other:?}"),
    }
    client
        .emit("record", &json!({"key": "r1", "value": 1}))
        .await
        .unwrap();
    client
        .emit(
            json!({"ev": "record", "v": 2}),
            &json!({"key": "r2", "value": 2}),
        )
        .await
        .unwrap();
    let got: Vec<Value> = client
        .send("recorded", &json!({"key": "r1:also", "n": 1}))
        .await
        .unwrap();
    assert_eq!(got, [json!(1)]);
    let got: Vec<Value> = client
        .send("recorded", &json!({"key": "r2:obj", "n": 1}))
        .await
        .unwrap();
    assert_eq!(got, [json!(2)]);
}
