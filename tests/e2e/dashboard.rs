//! The dashboard as on-call staff see it: rendered by a real headless Chromium (Debian's, installed when missing)
//! while an alert fires, its DOM checked for the model's section, the firing alert and the feature rows, and its
//! screenshot decoded and checked for what was drawn: the alert banner's red, the reference and live bars, and the
//! drift-over-time line.

use std::path::Path;
use std::process::Command;

use crate::monitor::{firing_at_once_deployment, predict, reference_rows, report_after, shifted};
use crate::support::{ensure_debian_package, TestServer};

fn chromium(args: &[String], profile: &Path) -> std::process::Output {
    let binary = ensure_debian_package("/usr/bin/chromium", "chromium");
    // The flags that keep Chromium off the (closed) network and quiet in a container, bounded by `timeout`.
    Command::new("timeout")
        .arg("60")
        .arg(binary)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .expect("chromium runs")
}

/// Pixels within 12 of `rgb` on every channel.
fn count_colour(image: &[u8], channels: usize, rgb: [u8; 3]) -> usize {
    image.chunks(channels).filter(|px| (0..3).all(|c| px[c].abs_diff(rgb[c]) <= 12)).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_renders_the_firing_alert_the_bars_and_the_history_in_chromium() {
    let (_remote, _data, gitops) = firing_at_once_deployment();
    let server = TestServer::start_with(move |config| config.gitops = Some(gitops)).await;
    server.until(|s| s.syncs >= 1).await;
    let sample: Vec<Vec<f64>> = reference_rows().into_iter().step_by(3).collect();
    predict(&server, &sample).await;
    report_after(&server, 190).await;
    predict(&server, &shifted(&sample)).await;
    report_after(&server, 380).await;
    let alerts = server.get("/api/v1/alerts").await.body;
    assert_eq!(alerts["alerts"][0]["state"], "firing", "{alerts}");

    let url = format!("http://{}/dashboard", server.server.local_addr());
    let scratch = tempfile::tempdir().unwrap();
    let dom = tokio::task::block_in_place(|| chromium(&["--dump-dom".into(), url.clone()], &scratch.path().join("a")));
    let html = String::from_utf8_lossy(&dom.stdout);
    assert!(dom.status.success(), "{}", String::from_utf8_lossy(&dom.stderr));
    assert!(html.contains(r#"<section class="model" id="breast_cancer">"#), "{html}");
    assert!(html.contains(r#"<div class="alert firing"><b>VaneDatasetDrift · page</b>"#), "{html}");
    assert!(html.contains("1 firing alert(s) across 1 monitored model(s)"), "{html}");
    assert!(html.contains(r#"<tr class="drifted"><td>mean_radius</td><td>Numeric</td><td>ks</td>"#), "{html}");
    assert!(html.contains(r#"<polyline class="share""#), "{html}");

    let shot = scratch.path().join("dashboard.png");
    let output = tokio::task::block_in_place(|| {
        chromium(
            &[format!("--screenshot={}", shot.display()), "--window-size=1280,1400".into(), url.clone()],
            &scratch.path().join("b"),
        )
    });
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    // Kept beside the build for a person to look at.
    let _ = std::fs::copy(&shot, Path::new(env!("CARGO_MANIFEST_DIR")).join("target/dashboard.png"));
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&shot).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut pixels).unwrap();
    let channels = info.color_type.samples();
    let pixels = &pixels[..info.buffer_size()];
    assert_eq!((info.width, info.height), (1280, 1400));
    for (what, rgb) in [
        ("the alert banner's border", [0xe5, 0x48, 0x4d]),
        ("reference bars", [0x6e, 0x7b, 0xff]),
        ("live bars", [0xff, 0xb2, 0x24]),
        ("the drift-over-time line", [0x3d, 0xd6, 0x8c]),
    ] {
        let n = count_colour(pixels, channels, rgb);
        assert!(n >= 40, "{what}: only {n} pixels of {rgb:?} in the screenshot");
    }
    server.stop().await;
}
