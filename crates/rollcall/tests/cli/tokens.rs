//! `rollcall token create|list|revoke` and the token every client command presents, against a
//! registry process that serves nobody without a token; and a service that will not start
//! beyond loopback without one.

use std::path::Path;
use std::process::Output;

use rollcall_testkit::ServerProcess;
use rollcall_wire::TokenView;

fn rollcall() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_rollcall"))
}

/// Runs `rollcall ARGS` with `env` set (and no inherited registry or token) to completion.
async fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = tokio::process::Command::new(rollcall());
    command
        .args(args)
        .env_remove("ROLLCALL_REGISTRY")
        .env_remove("ROLLCALL_TOKEN")
        .env_remove("ROLLCALL_TOKEN_FILE")
        .envs(env.iter().copied());
    command.output().await.expect("run rollcall")
}

fn stdout(output: &Output) -> String {
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout.clone()).expect("UTF-8")
}

#[tokio::test]
async fn an_operator_issues_lists_and_revokes_tokens_and_commands_present_them() {
    let registry = ServerProcess::start(rollcall(), "registry", |c| {
        c.arg("--require-tokens");
    });
    let admin_file = registry.data_path().join("admin.token");
    let admin_file = admin_file.to_str().expect("UTF-8 path");
    let target = ["--registry", registry.url.as_str(), "--token-file", admin_file];

    let created = run(
        &[&["token", "create", "ci", "--scope", "read"][..], &target].concat(),
        &[],
    )
    .await;
    let reader = stdout(&created).trim().to_owned();
    assert!(reader.starts_with("rc_"), "only the token on stdout: {reader}");

    let listed = run(&[&["token", "list", "--json"][..], &target].concat(), &[]).await;
    let listed: Vec<TokenView> = serde_json::from_str(&stdout(&listed)).expect("JSON");
    assert_eq!(
        listed.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        ["admin", "registry", "ci"],
        "oldest first; `registry` is the registry's own, made at start to ship its audit trail"
    );

    let services = ["services", "--registry", registry.url.as_str()];
    let refused = run(&services, &[]).await;
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("401") && said.contains("needs a token"), "{said}");
    assert!(stdout(&run(&services, &[("ROLLCALL_TOKEN", &reader)]).await).contains("no services registered"));

    let ci = &listed[2].id;
    stdout(&run(&[&["token", "revoke", ci.as_str()][..], &target].concat(), &[]).await);
    let revoked = run(&services, &[("ROLLCALL_TOKEN", &reader)]).await;
    assert!(
        String::from_utf8_lossy(&revoked.stderr).contains("not valid"),
        "revoked at once"
    );
    let unknown_scope = run(
        &[&["token", "create", "x", "--scope", "root"][..], &target].concat(),
        &[],
    )
    .await;
    assert!(String::from_utf8_lossy(&unknown_scope.stderr).contains("unknown scope"));
}

#[tokio::test]
async fn a_service_refuses_to_listen_beyond_loopback_without_a_token() {
    // Refused before it binds: nothing listens on 0.0.0.0 in this test.
    let data = tempfile::tempdir().expect("data dir");
    let data = data.path().to_str().expect("UTF-8 path");
    let args = ["grades", "--listen", "0.0.0.0:0", "--data-dir", data];
    let output = run(&args, &[("ROLLCALL_ALLOW_ANONYMOUS", "false")]).await;
    assert!(!output.status.success());
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(
        said.contains("needs a token") && said.contains("--allow-anonymous"),
        "{said}"
    );
}
