//! A drift report as one self-contained HTML page (no scripts, no external files): the dataset verdict first, then
//! a row per column with its test, score and threshold, and reference-vs-current bars per bin or category, drifted
//! columns first, so someone paged at night sees what moved before anything else.

use std::fmt::Write as _;

use crate::drift::{ColumnReport, DriftReport};

/// Escapes text for HTML.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Reference-vs-current bars (proportions) as an inline SVG; labels under each pair.
pub fn bars_svg(labels: &[String], reference: &[u64], current: &[u64]) -> String {
    let (nr, nc) = (reference.iter().sum::<u64>().max(1) as f64, current.iter().sum::<u64>().max(1) as f64);
    let shown = labels.len().min(24);
    let (width, height, pad) = (36.0 * shown as f64 + 20.0, 120.0, 18.0);
    let top = reference[..shown]
        .iter()
        .zip(&current[..shown])
        .map(|(&r, &c)| (r as f64 / nr).max(c as f64 / nc))
        .fold(0.0f64, f64::max)
        .max(1e-9);
    let mut svg = format!(
        r#"<svg class="bars" width="{width}" height="{}" viewBox="0 0 {width} {}" role="img">"#,
        height + pad,
        height + pad
    );
    for i in 0..shown {
        let x = 10.0 + 36.0 * i as f64;
        for (offset, share, class) in [(0.0, reference[i] as f64 / nr, "ref"), (15.0, current[i] as f64 / nc, "cur")] {
            let h = (share / top) * (height - 10.0);
            let _ = write!(
                svg,
                r#"<rect class="{class}" x="{:.1}" y="{:.1}" width="14" height="{h:.1}"><title>{class} {:.1}%</title></rect>"#,
                x + offset,
                height - h,
                share * 100.0
            );
        }
        let label: String = labels[i].chars().take(5).collect();
        let _ = write!(svg, r#"<text x="{:.1}" y="{:.1}">{}</text>"#, x, height + 13.0, escape(&label));
    }
    svg.push_str("</svg>");
    svg
}

fn column_bars(column: &ColumnReport) -> String {
    if let Some(psi) = &column.psi {
        if let (Some(edges), Some(r), Some(c)) = (&psi.bin_edges, &psi.reference_counts, &psi.current_counts) {
            let mut labels: Vec<String> = edges.iter().map(|e| format!("≤{e}")).collect();
            labels.push(format!(">{}", edges.last().copied().unwrap_or_default()));
            return bars_svg(&labels, r, c);
        }
    }
    match (&column.categories, &column.reference_counts, &column.current_counts) {
        (Some(categories), Some(r), Some(c)) => {
            let r: Vec<u64> = categories.iter().map(|k| r.get(k).copied().unwrap_or(0)).collect();
            let c: Vec<u64> = categories.iter().map(|k| c.get(k).copied().unwrap_or(0)).collect();
            bars_svg(categories, &r, &c)
        }
        _ => String::new(),
    }
}

fn number(value: Option<f64>) -> String {
    match value {
        None => "–".to_owned(),
        Some(v) if v != 0.0 && (v.abs() < 1e-3 || v.abs() >= 1e5) => format!("{v:.3e}"),
        Some(v) => format!("{v:.4}"),
    }
}

/// The page's shared style: readable at night (dark), drifted rows marked.
pub const STYLE: &str = "body{font:14px system-ui,sans-serif;background:#111;color:#ddd;margin:24px}\
h1{font-size:20px}table{border-collapse:collapse}td,th{padding:6px 10px;border-bottom:1px solid #333;\
vertical-align:middle;text-align:left}tr.drifted td:first-child{border-left:4px solid #e5484d}\
.verdict{font-size:18px;margin:12px 0}.verdict.drift{color:#ff6369}.verdict.ok{color:#3dd68c}\
rect.ref{fill:#6e7bff}rect.cur{fill:#ffb224}svg.bars text{fill:#999;font-size:9px}\
.legend span{display:inline-block;width:10px;height:10px;margin:0 4px 0 12px}";

/// The whole page.
pub fn report_page(report: &DriftReport, title: &str) -> String {
    let dataset = &report.dataset_drift;
    let mut page = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head><body>",
        escape(title)
    );
    let _ = write!(
        page,
        "<h1>{}</h1><p class=\"verdict {}\" id=\"dataset-verdict\">{} of {} columns drifted ({:.0}%): {}</p>\
         <p>Reference {} rows, current {} rows. <span class=\"legend\"><span style=\"background:#6e7bff\"></span>\
         reference<span style=\"background:#ffb224\"></span>current</span></p>",
        escape(title),
        if dataset.dataset_drift { "drift" } else { "ok" },
        dataset.number_of_drifted_columns,
        dataset.number_of_columns,
        dataset.share_of_drifted_columns * 100.0,
        if dataset.dataset_drift { "dataset drift" } else { "no dataset drift" },
        report.n_rows.reference,
        report.n_rows.current,
    );
    if let Some(streamed) = report.streamed.as_ref().filter(|s| !s.approximate_columns.is_empty()) {
        let _ = write!(
            page,
            "<p id=\"streamed\">Read with --stream: the numeric statistics of {} are estimated from {} sketches \
             (rank error {:.3}% per side); counts, means, categories and missing cells are exact.</p>",
            escape(&streamed.approximate_columns.join(", ")),
            escape(streamed.sketch),
            streamed.rank_error * 100.0
        );
    }
    if let Some(estimated) = &report.estimated_quality {
        let q = &estimated.quality;
        let _ = write!(
            page,
            "<h2 id=\"estimated-quality\">Quality estimated from the current scores (labels not read)</h2>\
             <p>{} rows, calibration {} (asked: {}).</p><table><tr><th>metric</th><th>estimated</th></tr>",
            q.n_rows,
            q.calibration.name(),
            estimated.calibration_requested.name()
        );
        for metric in crate::stats::cbpe::METRICS {
            let _ = write!(page, "<tr><td>{metric}</td><td>{}</td></tr>", number(q.metric(metric)));
        }
        page.push_str("</table>");
    }
    if let Some(m) = &report.multivariate {
        let _ = write!(
            page,
            "<h2 id=\"multivariate\">Multivariate drift</h2><p class=\"verdict {}\">PCA reconstruction error {} \
             against the reference's {} (bounds {} to {}, {} components)</p>",
            if m.drifted { "drift" } else { "ok" },
            number(m.reconstruction_error.current),
            number(m.reconstruction_error.reference),
            number(Some(m.bounds.lower)),
            number(Some(m.bounds.upper)),
            m.pca_components
        );
    }
    page.push_str(&columns_table("columns", &report.column_order, &report.columns));
    page.push_str(&data_quality_table("data-quality", &report.column_order, &report.data_quality));
    page.push_str("</body></html>\n");
    page
}

/// The per-column table of a report, drifted columns first: test, score, threshold, verdict, PSI, JS, missing shares
/// and the reference-vs-current bars. Shared by the offline report and the dashboard.
pub fn columns_table(id: &str, order: &[String], columns: &std::collections::BTreeMap<String, ColumnReport>) -> String {
    let mut table = format!(
        "<table id=\"{id}\"><tr><th>column</th><th>kind</th><th>test</th><th>score</th><th>threshold</th>\
         <th>drifted</th><th>PSI</th><th>JS</th><th>missing ref → cur</th><th>reference vs current</th></tr>"
    );
    let mut order: Vec<&String> = order.iter().filter(|name| columns.contains_key(*name)).collect();
    order.sort_by_key(|name| !columns[*name].drift.as_ref().is_some_and(|d| d.drifted));
    for name in order {
        let column = &columns[name];
        let drifted = column.drift.as_ref().is_some_and(|d| d.drifted);
        let (test, score, threshold) = match &column.drift {
            Some(d) => (d.stattest, number(Some(d.drift_score)), number(Some(d.threshold))),
            None => ("skipped (a side has no values)", "–".to_owned(), "–".to_owned()),
        };
        let _ = write!(
            table,
            "<tr class=\"{}\"><td>{}</td><td>{:?}</td><td>{test}</td><td>{score}</td><td>{threshold}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{:.1}% → {:.1}%</td><td>{}</td></tr>",
            if drifted { "drifted" } else { "" },
            escape(name),
            column.kind,
            if drifted { "yes" } else { "no" },
            number(column.psi.as_ref().map(|p| p.value)),
            number(column.js_distance),
            column.missing.reference.share * 100.0,
            column.missing.current.share * 100.0,
            column_bars(column),
        );
    }
    table.push_str("</table>");
    table
}

/// A model's drift share over time as an SVG line, with the dataset-drift line at 50%.
pub fn history_svg(history: &[crate::live::HistoryPoint]) -> String {
    let (width, height) = (600.0, 120.0);
    let mut svg = format!(
        r#"<svg class="history" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img"><title>share of drifted features over time</title>"#
    );
    let y = |share: f64| height - 4.0 - share.clamp(0.0, 1.0) * (height - 8.0);
    let _ = write!(
        svg,
        r#"<line class="limit" x1="0" x2="{width}" y1="{0:.1}" y2="{0:.1}"/><text x="4" y="{1:.1}">50%</text>"#,
        y(0.5),
        y(0.5) - 3.0
    );
    if let (Some(first), Some(last)) = (history.first(), history.last()) {
        let span = (last.at_unix_ms.saturating_sub(first.at_unix_ms)).max(1) as f64;
        let points: Vec<String> = history
            .iter()
            .map(|p| {
                let x = if history.len() == 1 {
                    width / 2.0
                } else {
                    (p.at_unix_ms - first.at_unix_ms) as f64 / span * (width - 8.0) + 4.0
                };
                format!("{x:.1},{:.1}", y(p.drift_share))
            })
            .collect();
        let _ = write!(svg, r#"<polyline class="share" points="{}"/>"#, points.join(" "));
        for p in points.iter().rev().take(1) {
            let (x, yy) = p.split_once(',').unwrap_or(("0", "0"));
            let _ = write!(svg, r#"<circle class="share" cx="{x}" cy="{yy}" r="3"/>"#);
        }
    }
    svg.push_str("</svg>");
    svg
}

/// Lines over time, one per `(class, points)` series, on a y axis from `lo` to `hi`, with an optional dashed limit.
pub fn lines_svg(title: &str, series: &[(&str, Vec<(u64, f64)>)], lo: f64, hi: f64, limit: Option<f64>) -> String {
    let (width, height) = (600.0, 120.0);
    let mut svg = format!(
        r#"<svg class="history" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img"><title>{}</title>"#,
        escape(title)
    );
    let span_y = if hi > lo { hi - lo } else { 1.0 };
    let y = |v: f64| height - 4.0 - ((v - lo) / span_y).clamp(0.0, 1.0) * (height - 8.0);
    let _ = write!(
        svg,
        r#"<text x="4" y="12">{}</text><text x="4" y="{:.1}">{}</text>"#,
        number(Some(hi)),
        height - 6.0,
        number(Some(lo))
    );
    if let Some(limit) = limit {
        let _ = write!(svg, r#"<line class="limit" x1="0" x2="{width}" y1="{0:.1}" y2="{0:.1}"/>"#, y(limit));
    }
    let times = series.iter().flat_map(|(_, points)| points.iter().map(|p| p.0));
    let (first, last) = times.fold((u64::MAX, 0), |(a, b), t| (a.min(t), b.max(t)));
    let span = last.saturating_sub(first).max(1) as f64;
    for (class, points) in series.iter().filter(|(_, p)| !p.is_empty()) {
        let coordinates: Vec<String> = points
            .iter()
            .map(|&(t, v)| {
                let x = if first == last { width / 2.0 } else { (t - first) as f64 / span * (width - 8.0) + 4.0 };
                format!("{x:.1},{:.1}", y(v))
            })
            .collect();
        let _ = write!(svg, r#"<polyline class="{class}" points="{}"/>"#, coordinates.join(" "));
    }
    svg.push_str("</svg>");
    svg
}

fn percent(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

/// Estimated (no labels) beside realized (labels) quality, and accuracy over time.
fn quality_section(
    anchor: &str,
    report: &crate::live::LiveReport,
    realized: Option<&crate::feedback::QualityReport>,
) -> String {
    let estimated = report.estimated_quality.as_ref();
    let realized_classification = realized.and_then(|q| q.classification.as_ref());
    if estimated.is_none() && realized_classification.is_none() {
        return String::new();
    }
    let mut html = format!(
        "<div id=\"{anchor}\"><h4>Quality: estimated from the scores (no labels) and realized (labelled predictions)</h4>\
         <table class=\"quality\"><tr><th>metric</th><th>estimated</th><th>realized</th></tr>"
    );
    for metric in crate::stats::cbpe::METRICS {
        let realized_value = realized_classification.and_then(|c| c.metric(metric));
        let _ = write!(
            html,
            "<tr><td>{metric}</td><td>{}</td><td>{}</td></tr>",
            number(estimated.and_then(|q| q.metric(metric))),
            number(realized_value)
        );
    }
    let labelled = realized.map_or(0, |q| q.window_pairs);
    let _ = write!(html, "</table><p>Realized over the last {labelled} labelled predictions.</p>");
    let series = |pick: fn(&crate::live::HistoryPoint) -> Option<f64>| -> Vec<(u64, f64)> {
        report.history.iter().filter_map(|p| Some((p.at_unix_ms, pick(p)?))).collect()
    };
    html.push_str(&lines_svg(
        "accuracy over time: estimated (orange), realized (green)",
        &[("estimated", series(|p| p.estimated_accuracy)), ("realized", series(|p| p.realized_accuracy))],
        0.0,
        1.0,
        None,
    ));
    html.push_str("</div>");
    html
}

fn multivariate_section(anchor: &str, report: &crate::live::LiveReport) -> String {
    let Some(m) = &report.multivariate else { return String::new() };
    let outside = m.reconstruction_error > m.bounds.upper || m.reconstruction_error < m.bounds.lower;
    let mut html = format!(
        "<div id=\"{anchor}\"><h4>Multivariate drift (PCA reconstruction error, {} components)</h4>\
         <p class=\"verdict {}\">window {} against the reference's {} (bounds {} to {} for {} rows): {:.1} standard \
         errors</p>",
        m.pca_components,
        if outside { "drift" } else { "ok" },
        number(Some(m.reconstruction_error)),
        number(Some(m.reference_error)),
        number(Some(m.bounds.lower)),
        number(Some(m.bounds.upper)),
        report.window_rows,
        m.z
    );
    let points: Vec<(u64, f64)> =
        report.history.iter().filter_map(|p| Some((p.at_unix_ms, p.reconstruction_error?))).collect();
    let top = points.iter().map(|p| p.1).fold(m.bounds.upper, f64::max) * 1.1;
    html.push_str(&lines_svg("reconstruction error over time", &[("share", points)], 0.0, top, Some(m.bounds.upper)));
    html.push_str("</div>");
    html
}

fn data_quality_section(anchor: &str, report: &crate::live::LiveReport) -> String {
    if report.data_quality.is_empty() {
        return String::new();
    }
    let order: Vec<String> = report.data_quality.keys().cloned().collect();
    format!(
        "<div id=\"{anchor}\">{}</div>",
        data_quality_table(&format!("{anchor}-table"), &order, &report.data_quality)
    )
}

/// Each feature's data-quality shares with an example, features with a problem first.
fn data_quality_table(
    id: &str,
    order: &[String],
    checks: &std::collections::BTreeMap<String, crate::data_quality::FeatureQuality>,
) -> String {
    let mut html = format!(
        "<h4>Data quality</h4><table class=\"data-quality\" id=\"{id}\"><tr><th>feature</th>\
         <th>missing</th><th>out of range</th><th>unseen categories</th><th>wrong type</th></tr>"
    );
    let cell = |share: Option<&crate::data_quality::Share>| match share {
        None => "–".to_owned(),
        Some(s) => match &s.example {
            Some(example) if s.count > 0 => format!("{} (e.g. {})", percent(s.share), escape(example)),
            _ => percent(s.share),
        },
    };
    // Features with a problem first, then in column order.
    let mut features: Vec<(&String, &crate::data_quality::FeatureQuality)> =
        order.iter().filter_map(|name| Some((name, checks.get(name)?))).collect();
    features.sort_by_key(|(_, q)| {
        std::cmp::Reverse(crate::data_quality::CHECKS.iter().filter_map(|c| q.check(c)).map(|s| s.count).sum::<u64>())
    });
    for (feature, q) in features {
        let bad = crate::data_quality::CHECKS.iter().filter_map(|c| q.check(c)).any(|s| s.count > 0);
        let _ = write!(
            html,
            "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            if bad { "drifted" } else { "" },
            escape(feature),
            cell(Some(&q.missing)),
            cell(q.out_of_range.as_ref()),
            cell(q.unseen_category.as_ref()),
            cell(Some(&q.wrong_type)),
        );
    }
    html.push_str("</table>");
    html
}

/// The dashboard: per model, its firing alerts, then per version the drift share over time and each feature's
/// test, score and reference-vs-live bars (drifted first), prediction drift, estimated beside realized quality,
/// multivariate drift and data quality, each under an anchor (`<model>-v<version>-drift`, `-prediction`,
/// `-quality`, `-multivariate`, `-data-quality`) that alerts link to. Refreshes itself every 10 s; no scripts.
pub fn dashboard_page(
    models: &[(String, Vec<std::sync::Arc<crate::live::LiveReport>>)],
    alerts: &[crate::alerts::Alert],
    quality: &[crate::feedback::QualityReport],
    now_unix_ms: u64,
) -> String {
    let mut page = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"10\">\
         <title>Vane: drift</title><style>{STYLE}{DASHBOARD_STYLE}</style></head><body><h1>Vane drift monitor</h1>"
    );
    let firing: Vec<&crate::alerts::Alert> =
        alerts.iter().filter(|a| a.state == crate::alerts::State::Firing).collect();
    let _ = write!(
        page,
        "<p id=\"summary\" class=\"verdict {}\">{} firing alert(s) across {} monitored model(s)</p>",
        if firing.is_empty() { "ok" } else { "drift" },
        firing.len(),
        models.len()
    );
    if models.is_empty() {
        page.push_str("<p>No model with reference data is being served.</p>");
    }
    for (model, reports) in models {
        let _ = write!(page, "<section class=\"model\" id=\"{}\"><h2>{}</h2>", escape(model), escape(model));
        for alert in firing.iter().filter(|a| &a.model == model) {
            let _ = write!(
                page,
                "<div class=\"alert firing\"><b>{} · {}</b> since {} s: {}</div>",
                alert.name,
                alert.severity,
                now_unix_ms.saturating_sub(alert.fired_unix_ms.unwrap_or(alert.since_unix_ms)) / 1000,
                escape(&alert.summary)
            );
        }
        if reports.is_empty() {
            page.push_str("<p>No predictions observed yet.</p>");
        }
        for report in reports {
            let commit = report.commit.as_deref().map(|c| &c[..c.len().min(12)]).unwrap_or("–");
            let _ = write!(
                page,
                "<h3>version {} · commit {} · window {} / {} rows · evaluated {} s ago</h3>",
                report.version,
                escape(commit),
                report.window_rows,
                report.window_size,
                now_unix_ms.saturating_sub(report.evaluated_unix_ms) / 1000
            );
            if !report.enough_samples {
                let _ = write!(
                    page,
                    "<p class=\"waiting\">Waiting for {} more predictions before any verdict (min_samples {}).</p>",
                    report.min_samples.saturating_sub(report.window_rows),
                    report.min_samples
                );
                continue;
            }
            // Each version's sections carry the anchors its alerts link to.
            let anchor = |section: &str| format!("{}-v{}-{section}", escape(model), report.version);
            let _ = write!(page, "<div id=\"{}\">", anchor("drift"));
            page.push_str(&history_svg(&report.history));
            let order: Vec<String> = report.columns.keys().cloned().collect();
            page.push_str(&columns_table(
                &format!("features-{}-{}", escape(model), report.version),
                &order,
                &report.columns,
            ));
            page.push_str("</div>");
            if let Some(prediction) = &report.prediction_drift {
                let _ = write!(
                    page,
                    "<div id=\"{}\"><h4>Prediction drift: the live predictions against the reference's '{}'</h4>",
                    anchor("prediction"),
                    escape(&prediction.column)
                );
                let columns =
                    std::collections::BTreeMap::from([(prediction.column.clone(), prediction.report.clone())]);
                page.push_str(&columns_table(
                    &format!("prediction-{}-{}", escape(model), report.version),
                    std::slice::from_ref(&prediction.column),
                    &columns,
                ));
                let points: Vec<(u64, f64)> =
                    report.history.iter().filter_map(|p| Some((p.at_unix_ms, p.prediction_psi?))).collect();
                let top = points.iter().map(|p| p.1).fold(0.25, f64::max);
                page.push_str(&lines_svg("prediction PSI over time", &[("share", points)], 0.0, top, Some(0.2)));
                page.push_str("</div>");
            }
            let realized = quality.iter().find(|q| &q.model == model && q.version == report.version);
            page.push_str(&quality_section(&anchor("quality"), report, realized));
            page.push_str(&multivariate_section(&anchor("multivariate"), report));
            page.push_str(&data_quality_section(&anchor("data-quality"), report));
        }
        page.push_str("</section>");
    }
    page.push_str("</body></html>\n");
    page
}

const DASHBOARD_STYLE: &str = ".alert.firing{background:#3b1219;border:1px solid #e5484d;color:#ff6369;\
padding:10px 14px;margin:8px 0;font-size:16px}svg.history{background:#181818;display:block;margin:8px 0}\
svg.history line.limit{stroke:#e5484d;stroke-dasharray:4 3}svg.history text{fill:#999;font-size:10px}\
polyline.share{fill:none;stroke:#3dd68c;stroke-width:2}polyline.estimated{fill:none;stroke:#ffb224;stroke-width:2}\
polyline.realized{fill:none;stroke:#3dd68c;stroke-width:2}circle.share{fill:#3dd68c}section.model{margin-bottom:40px}\
.waiting{color:#ffb224}";
