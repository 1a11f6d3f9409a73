//! OpenMetrics text (what prometheus-client writes) as Prometheus' text format.

use std::fmt::Write as _;

/// OpenMetrics text (what prometheus-client writes) as Prometheus' text format 0.0.4,
/// which `promtool check metrics` and every Prometheus version read: a counter's HELP
/// and TYPE lines name its samples (`x_total`, where OpenMetrics names the family `x`),
/// an info metric is a gauge, and there is no `# UNIT` or `# EOF` line. Samples are the
/// same in both formats.
pub(super) fn prometheus_text(open_metrics: &str) -> Result<String, std::fmt::Error> {
    let mut out = String::with_capacity(open_metrics.len());
    // OpenMetrics puts HELP before TYPE; the name it must carry is known at TYPE.
    let mut help: Option<&str> = None;
    for line in open_metrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            if let Some(pending) = help.replace(rest) {
                writeln!(out, "# HELP {pending}")?;
            }
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (family, kind) = rest.rsplit_once(' ').unwrap_or((rest, "unknown"));
            let (name, kind) = match kind {
                "counter" => (format!("{family}_total"), "counter"),
                "info" => (format!("{family}_info"), "gauge"),
                "gauge" | "histogram" | "summary" => (family.to_owned(), kind),
                "stateset" => (family.to_owned(), "gauge"),
                _ => (family.to_owned(), "untyped"),
            };
            if let Some(pending) = help.take() {
                let text = pending.split_once(' ').map_or("", |(_, text)| text);
                writeln!(out, "# HELP {name} {text}")?;
            }
            writeln!(out, "# TYPE {name} {kind}")?;
        } else if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        } else {
            if let Some(pending) = help.take() {
                writeln!(out, "# HELP {pending}")?;
            }
            writeln!(out, "{line}")?;
        }
    }
    if let Some(pending) = help {
        writeln!(out, "# HELP {pending}")?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_metrics_counters_info_units_and_eof_are_translated() {
        let open_metrics = concat!(
            "# HELP a_thing Things done.\n# TYPE a_thing counter\n",
            "a_thing_total{x=\"1\"} 2\n# HELP v Versions.\n# TYPE v info\n",
            "v_info{version=\"1\"} 1\n# HELP g Gauge.\n# TYPE g gauge\n# UNIT g seconds\n",
            "g 3\n# EOF\n",
        );
        assert_eq!(
            prometheus_text(open_metrics).unwrap(),
            concat!(
                "# HELP a_thing_total Things done.\n# TYPE a_thing_total counter\n",
                "a_thing_total{x=\"1\"} 2\n# HELP v_info Versions.\n# TYPE v_info gauge\n",
                "v_info{version=\"1\"} 1\n# HELP g Gauge.\n# TYPE g gauge\ng 3\n",
            )
        );
    }
}
