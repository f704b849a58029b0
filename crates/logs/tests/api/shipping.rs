//! A service built with rollcall-client ships its tracing records to the log service through
//! the native batch API.

use std::time::Duration;

use rollcall_client::{LogShipping, Service, ShippingConfig};
use rollcall_testkit::{DEADLINE, eventually};
use rollcall_wire::Level;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::prelude::*;

use crate::TestLogs;

#[tokio::test]
async fn a_services_tracing_records_arrive_with_level_fields_and_target() {
    let logs = TestLogs::spawn().await;
    let config = ShippingConfig {
        linger: Duration::from_millis(20),
        ..ShippingConfig::default()
    };
    let shipping = LogShipping::with_config("GradingService", config);
    let _guard = tracing_subscriber::registry().with(shipping.layer()).set_default();
    let service = Service::builder("GradingService")
        .requires(["LogService"])
        .registry(&logs.registry.url)
        .handle_signals(false)
        .ship_logs(shipping.clone())
        .start(CancellationToken::new())
        .await
        .expect("starts");

    tracing::warn!(student = 7, score = 120.5, "grade refused");
    let record = eventually("the record in the log service", DEADLINE, || async {
        logs.query("service=GradingService&contains=refused")
            .await
            .records
            .pop()
    })
    .await;
    assert_eq!(record.level, Level::Warn);
    assert_eq!(record.fields["student"], serde_json::json!(7));
    assert_eq!(record.fields["score"], serde_json::json!(120.5));
    assert_eq!(record.fields["target"], serde_json::json!("api::shipping"));
    service.stop().await;
    assert_eq!(shipping.dropped(), 0);
}
