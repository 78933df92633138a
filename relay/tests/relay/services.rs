//! Run-time services end to end: an operator adds a service through the relay API and proxies
//! to it at once, removes it (the proxy then answers 404), and is refused a cloud-metadata
//! target with the reason of whoever refused it (the relay for a literal address, the agent
//! for a name that resolves to one on the appliance).

use serde_json::{Value, json};

use crate::harness::{Agent, Relay, device_server};

pub async fn post(relay: &Relay, path: &str, body: Value) -> (u16, Value) {
    let r = relay
        .http
        .post(format!("{}{path}", relay.base))
        .bearer_auth(&relay.token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn delete(relay: &Relay, path: &str) -> (u16, Value) {
    let r = relay
        .http
        .delete(format!("{}{path}", relay.base))
        .bearer_auth(&relay.token)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_adds_a_service_proxies_to_it_and_removes_it() {
    let relay = Relay::start(&[]).await;
    let device = device_server().await;
    let phone = device_server().await;
    let _agent = Agent::start(&relay, &relay.secret, &format!("demo={device}"), &[]);
    let id = relay.active_session_with("demo").await;
    let services = format!("/api/v1/sessions/{id}/services");

    let (status, body) = post(
        &relay,
        &services,
        json!({"services": {"phone": {"target": phone.to_string(), "label": "Desk phone"}}}),
    )
    .await;
    assert_eq!(status, 200, "{body}\n{}", relay.log());
    assert_eq!(body["services"]["phone"]["label"], "Desk phone");
    // The agent re-sent its manifest before answering: the proxy knows the service at once.
    let r = relay
        .get(&format!("/api/v1/sessions/{id}/proxy/phone/headers"))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.text().await.unwrap(),
        format!("host={phone} authorization=false")
    );

    let (status, body) = delete(&relay, &format!("{services}/phone")).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["services"].get("phone").is_none(), "{body}");
    let r = relay
        .get(&format!("/api/v1/sessions/{id}/proxy/phone/hello"))
        .await;
    assert_eq!(r.status(), 404);

    // A service the appliance publishes itself cannot be removed.
    let (status, body) = delete(&relay, &format!("{services}/demo")).await;
    assert_eq!(status, 409, "{body}");

    // A literal cloud-metadata address never leaves the relay.
    let (status, body) = post(
        &relay,
        &services,
        json!({"services": {"md": {"target": "169.254.169.254:80"}}}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("169.254.169.254 is a cloud metadata address"),
        "{body}"
    );

    let audit = relay
        .get_json(&format!("/api/v1/audit?session_id={id}"))
        .await;
    let actions: Vec<&str> = audit["audit"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert!(actions.contains(&"service_add"), "{audit}");
    assert!(actions.contains(&"service_remove"), "{audit}");
}

/// Whether this process may create a mount namespace (root with `unshare`).
fn can_unshare() -> bool {
    std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "true"])
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_resolving_to_a_metadata_address_is_refused_by_the_agent() {
    if !can_unshare() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must be able to run `unshare --mount` (root) for this test"
        );
        eprintln!("skipped: `unshare --mount` is not available (needs root)");
        return;
    }
    let relay = Relay::start(&[]).await;
    let device = device_server().await;
    // On the appliance (the agent's own mount namespace) md.appliance.lan resolves to the
    // metadata address; nowhere else does, so only the agent can refuse it.
    let hosts = relay.dir.path().join("hosts");
    std::fs::write(
        &hosts,
        "127.0.0.1 localhost\n169.254.169.254 md.appliance.lan\n",
    )
    .unwrap();
    let hosts = hosts.to_str().unwrap().to_owned();
    let script = r#"mount --bind "$0" /etc/hosts && exec "$@""#;
    let wrapper = [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        script,
        &hosts,
    ];
    let _agent = Agent::start_under(
        &wrapper,
        &relay,
        &relay.secret,
        &format!("demo={device}"),
        &[],
    );
    let id = relay.active_session_with("demo").await;
    let (status, body) = post(
        &relay,
        &format!("/api/v1/sessions/{id}/services"),
        json!({"services": {"md": {"target": "md.appliance.lan:80"}}}),
    )
    .await;
    assert_eq!(status, 422, "{body}\n{}", relay.log());
    assert_eq!(body["error"]["code"], "agent_refused", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("169.254.169.254 is a cloud metadata address"),
        "the operator sees the agent's reason: {body}"
    );
    let detail = relay.get_json(&format!("/api/v1/sessions/{id}")).await;
    assert!(detail["services"].get("md").is_none(), "{detail}");
}
