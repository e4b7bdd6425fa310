//! The benchmark's report: Markdown tables, the targets of issues 7 and 16
//! judged met or missed with their figures (never asserted: speed is not a
//! test), and the same as JSON.

use serde_json::json;

use super::{
    median, workers_setting, Report, Row, Scenario, TARGET_B_OVER_A, TARGET_C_OVER_AGENT, TARGET_C_OVER_CEILING,
    TARGET_P99_C_OVER_A,
};

fn verdict(value: f64, target: f64) -> &'static str {
    if value >= target {
        "met"
    } else {
        "missed"
    }
}

fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "missed"
    }
}

/// "on workers / accepted" of a row, "-" without mqseal.
fn on_workers(r: &Row) -> String {
    r.broker_stats.map_or("-".to_string(), |s| format!("{} / {}", s.on_workers, s.accepted))
}

impl Scenario {
    /// "QoS 0 128 B".
    fn name(&self) -> String {
        format!("QoS {} {} B", self.qos, self.payload)
    }

    /// Rounds in which a configuration took a path other than the one it was set
    /// up for: worker threads configured but nothing verified on them (at full
    /// speed, where the rate gate must open), or `off` and something verified on them.
    fn path_warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        for k in self.protected() {
            let workers = self.workers_of(k);
            for (r, round) in self.rounds.iter().enumerate() {
                let Some(stats) = round[k].broker_stats else { continue };
                if workers == Some("off") && stats.on_workers > 0 {
                    warnings.push(format!(
                        "{} {} (verify_workers off), round {}: {} publishes verified on worker threads",
                        self.name(),
                        self.label(k),
                        r + 1,
                        stats.on_workers
                    ));
                }
                let threads = self.threads_of(k).unwrap_or(0);
                // At a fixed rate the gate may rightly stay shut (below verify_offload_above).
                if threads > 0 && !self.rate_limited && stats.on_workers == 0 {
                    warnings.push(format!(
                        "{} {} ({}), round {}: no publish verified on worker threads ({} accepted): the worker path was not taken",
                        self.name(),
                        self.label(k),
                        workers_setting(workers),
                        r + 1,
                        stats.accepted
                    ));
                }
            }
        }
        warnings
    }

    /// Every row, of every round, that did not deliver every message.
    fn incomplete(&self) -> Vec<String> {
        let mut rows: Vec<(String, usize, &Row)> = Vec::new();
        for (r, round) in self.rounds.iter().enumerate() {
            rows.extend(round.iter().enumerate().map(|(k, row)| (self.label(k), r, row)));
        }
        rows.extend(self.agent_rounds.iter().enumerate().map(|(r, row)| ("(d)".to_string(), r, row)));
        rows.into_iter()
            .filter(|(_, _, row)| !row.complete())
            .map(|(label, r, row)| format!("{} {label} round {}: {} of {} delivered", self.name(), r + 1, row.delivered, row.expected))
            .collect()
    }

    /// (d)'s median round if it delivered everything (else no throughput to compare with).
    fn complete_agent(&self) -> Option<&Row> {
        self.agent_median().filter(|d| d.complete())
    }

    /// Every log note of every round, with where it came from.
    fn log_notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        for (r, round) in self.rounds.iter().enumerate() {
            for (k, row) in round.iter().enumerate() {
                notes.extend(row.log_notes.iter().map(|n| format!("{} round {}: {n}", self.label(k), r + 1)));
            }
        }
        for (r, row) in self.agent_rounds.iter().enumerate() {
            notes.extend(row.log_notes.iter().map(|n| format!("(d) round {}: {n}", r + 1)));
        }
        notes
    }
}

impl Report {
    /// The results as Markdown: the summary tables, the targets, then each scenario's table.
    pub fn markdown(&self) -> String {
        let o = &self.options;
        let mut out = format!("CPU: {}; verification backend: {}\n\n", self.cpu_model, self.verification_backend);
        out.push_str(&format!(
            "{} messages per run, {} publishers, {} subscribers, rate {}, QoS 1 in-flight window {}, subscriber reads {}, \
             audit durability {}, {} round(s) per configuration (median shown; order rotated each round)\n\n",
            o.messages,
            o.publishers,
            o.subscribers,
            o.rate.map_or("unlimited".to_string(), |r| format!("{r} msg/s")),
            o.inflight,
            o.subscriber_reads(),
            o.audit_durability.as_deref().unwrap_or("default (fsync)"),
            o.rounds,
        ));
        let offload_above = o.offload_above.as_ref().map_or("default (10000 a second)".to_string(), |t| format!("{t} a second"));
        out.push_str(&format!(
            "Configurations: (b) runs mqseal's defaults ({}); (c): {}; verify_offload_above {offload_above}.",
            workers_setting(None),
            workers_setting(o.protected_workers.as_deref()),
        ));
        if let (Some(n), Some(_)) = (o.agent_messages.filter(|&n| n < o.messages), &o.agent_python) {
            out.push_str(&format!(" (d) publishes {n} messages per run (the agent's limit: see --agent-messages)."));
        }
        if o.worker_configs.is_empty() {
            out.push_str(" No worker configurations.\n\n");
        } else {
            out.push_str(&format!(
                " At QoS 0 also {}. QoS 1 runs none of them: QoS 1 is always verified on the broker thread.\n\n",
                o.worker_configs.iter().map(|w| format!("{} {}", super::worker_label(w), workers_setting(Some(w)))).collect::<Vec<_>>().join(", ")
            ));
        }
        let with_agent = self.scenarios.iter().any(|s| !s.agent_rounds.is_empty());
        out.push_str(
            "| QoS | payload B | (a) msg/s | (b) msg/s | (b)/(a) | broker CPU µs/msg (a) / (b) / (c) | (c) msg/s | (c)/(a) | ceiling for (c) msg/s | (c)/ceiling |\n",
        );
        out.push_str("|---|---|---|---|---|---|---|---|---|---|\n");
        for s in &self.scenarios {
            out.push_str(&format!(
                "| {} | {} | {:.0} | {:.0} | {:.3} | {:.1} / {:.1} / {:.1} | {:.0} | {:.3} | {:.0} | {:.3} |\n",
                s.qos,
                s.payload,
                s.median(0).msgs_per_s,
                s.median(1).msgs_per_s,
                s.ratio_to_a(1),
                s.median_cpu_us(0),
                s.median_cpu_us(1),
                s.median_cpu_us(2),
                s.median(2).msgs_per_s,
                s.ratio_to_a(2),
                s.ceiling_msgs_per_s(),
                s.c_over_ceiling(),
            ));
        }
        if o.rate.is_none() {
            self.workers_table(&mut out);
        } else {
            self.latency_table(&mut out);
        }
        // At a fixed rate the latency table above has (d) in it.
        if with_agent && o.rate.is_none() {
            out.push_str("\n| QoS | payload B | (d) agent msg/s | (d) CPU µs/msg (broker + agent) | (c) msg/s | (c)/(d) | best protected msg/s | best/(d) | p50 µs (a) / (c) / (d) | p99 µs (a) / (c) / (d) |\n");
            out.push_str("|---|---|---|---|---|---|---|---|---|---|\n");
            for s in &self.scenarios {
                let Some(d) = s.agent_median() else { continue };
                let (a, c) = (s.median(0), s.median(2));
                let best = s.best_protected();
                // Against a (d) that lost messages a ratio means nothing.
                let ratio = |x: f64| if d.complete() { format!("{:.2}", x / d.msgs_per_s) } else { "n/a".to_string() };
                out.push_str(&format!(
                    "| {} | {} | {} | {:.1} | {:.0} | {} | {} {:.0} | {} | {:.0} / {:.0} / {:.0} | {:.0} / {:.0} / {:.0} |\n",
                    s.qos,
                    s.payload,
                    if d.complete() { format!("{:.0}", d.msgs_per_s) } else { format!("{:.0} ({} of {} delivered)", d.msgs_per_s, d.delivered, d.expected) },
                    median(s.agent_rounds.iter().map(|r| r.cpu_us_per_msg).collect()),
                    c.msgs_per_s,
                    ratio(c.msgs_per_s),
                    s.label(best),
                    s.median(best).msgs_per_s,
                    ratio(s.median(best).msgs_per_s),
                    a.p50_us,
                    c.p50_us,
                    d.p50_us,
                    a.p99_us,
                    c.p99_us,
                    d.p99_us,
                ));
            }
        }
        self.targets(&mut out);
        let incomplete: Vec<String> = self.scenarios.iter().flat_map(Scenario::incomplete).collect();
        if !incomplete.is_empty() {
            out.push_str("\n**Incomplete deliveries** (msg/s of these rows counts only what arrived; no target is judged on them):\n\n");
            for i in &incomplete {
                out.push_str(&format!("- {i}\n"));
            }
        }
        let warnings: Vec<String> = self.scenarios.iter().flat_map(Scenario::path_warnings).collect();
        if !warnings.is_empty() {
            out.push_str("\n**Path warnings** (a configuration did not take the path it was set up for):\n\n");
            for w in &warnings {
                out.push_str(&format!("- {w}\n"));
            }
        }
        for s in &self.scenarios {
            out.push_str(&format!("\n### QoS {}, {} B payload\n\n", s.qos, s.payload));
            out.push_str("| configuration | delivered | msg/s | range over rounds | vs (a) | p50 µs | p99 µs | max µs | broker CPU s | CPU µs/msg | wire payload B | verified on workers / accepted |\n");
            out.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|\n");
            let agent = s.agent_median().map(|d| {
                let rates = s.agent_rounds.iter().map(|r| r.msgs_per_s);
                (d, rates.clone().fold(f64::INFINITY, f64::min), rates.fold(0.0, f64::max))
            });
            let rows = (0..s.configurations()).map(|k| {
                let (low, high) = s.range(k);
                (s.median(k), low, high)
            });
            for (r, low, high) in rows.chain(agent) {
                out.push_str(&format!(
                    "| {} | {}/{} | {:.0} | {:.0}-{:.0} | {:.3} | {:.0} | {:.0} | {:.0} | {:.2} | {:.1} | {} | {} |\n",
                    r.name,
                    r.delivered,
                    r.expected,
                    r.msgs_per_s,
                    low,
                    high,
                    r.msgs_per_s / s.median(0).msgs_per_s,
                    r.p50_us,
                    r.p99_us,
                    r.max_us,
                    r.broker_cpu_s,
                    r.cpu_us_per_msg,
                    r.wire_payload_bytes,
                    on_workers(r),
                ));
            }
            let (low, mid, high) = s.verify_spread();
            out.push_str(&format!(
                "\nCeiling for (c): 1 / ({:.1} µs median broker CPU per message in (a) + {:.1} µs to verify one envelope) = {:.0} msg/s; \
                 (c) reaches {:.3} of it. Verification: median {mid:.1} µs of {} samples taken between rounds, \
                 lowest {low:.1}, highest {high:.1}.\n",
                s.median_cpu_us(0),
                s.verify_us,
                s.ceiling_msgs_per_s(),
                s.c_over_ceiling(),
                s.verify_samples_us.len(),
            ));
            let notes = s.log_notes();
            if !notes.is_empty() {
                const SHOWN: usize = 8;
                out.push_str(&format!("\nBroker log lines to look at ({} in all):\n\n", notes.len()));
                for n in notes.iter().take(SHOWN) {
                    out.push_str(&format!("- `{n}`\n"));
                }
                if notes.len() > SHOWN {
                    out.push_str(&format!("- ... and {} more (see the JSON)\n", notes.len() - SHOWN));
                }
            }
        }
        out
    }

    /// Flat out, QoS 0: every protected configuration side by side.
    fn workers_table(&self, out: &mut String) {
        let scenarios: Vec<&Scenario> = self.scenarios.iter().filter(|s| !s.worker_configs.is_empty()).collect();
        if scenarios.is_empty() {
            return;
        }
        out.push_str("\nVerification on worker threads (QoS 0; broker CPU includes the workers' threads; the split and the count on workers are the median round's, the count from the broker log's `stopping:` line):\n\n");
        out.push_str("| QoS | payload B | configuration | msg/s | range over rounds | vs (c) | broker CPU µs/msg | of it broker thread / other threads | load generator CPU µs/msg | verified on workers / accepted | vs (d) |\n");
        out.push_str("|---|---|---|---|---|---|---|---|---|---|---|\n");
        for s in scenarios {
            let d = s.complete_agent().map(|d| d.msgs_per_s);
            for k in s.protected() {
                let (low, high) = s.range(k);
                let (thread, others, clients) = s.median(k).cpu_split_us();
                out.push_str(&format!(
                    "| {} | {} | {} {} | {:.0} | {:.0}-{:.0} | {:.2} | {:.1} | {thread:.1} / {others:.1} | {clients:.1} | {} | {} |\n",
                    s.qos,
                    s.payload,
                    s.label(k),
                    workers_setting(s.workers_of(k)),
                    s.median(k).msgs_per_s,
                    low,
                    high,
                    s.ratio_to_c(k),
                    s.median_cpu_us(k),
                    on_workers(s.median(k)),
                    d.map_or("-".to_string(), |d| format!("{:.2}", s.median(k).msgs_per_s / d)),
                ));
            }
        }
    }

    /// At a fixed rate: latency of every configuration, one row each.
    fn latency_table(&self, out: &mut String) {
        out.push_str("\nLatency at this rate (each configuration's round with the median p50; broker CPU includes the workers' threads):\n\n");
        out.push_str("| QoS | payload B | configuration | p50 µs | p99 µs | max µs | p99 vs (a) | broker CPU µs/msg | of it broker thread / other threads | verified on workers / accepted |\n");
        out.push_str("|---|---|---|---|---|---|---|---|---|---|\n");
        for s in &self.scenarios {
            let a = s.median(0);
            let rows = (0..s.configurations()).map(|k| (format!("{} {}", s.label(k), config_setting(s, k)), s.median(k), s.median_cpu_us(k)));
            let agent = s.agent_median().map(|d| ("(d) agent".to_string(), d, median(s.agent_rounds.iter().map(|r| r.cpu_us_per_msg).collect())));
            for (name, r, cpu) in rows.chain(agent) {
                let (thread, others, _) = r.cpu_split_us();
                out.push_str(&format!(
                    "| {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.2} | {:.1} | {thread:.1} / {others:.1} | {} |\n",
                    s.qos,
                    s.payload,
                    name,
                    r.p50_us,
                    r.p99_us,
                    r.max_us,
                    r.p99_us / a.p99_us,
                    cpu,
                    on_workers(r),
                ));
            }
        }
    }

    /// The targets this run can judge, met or missed, with their figures.
    fn targets(&self, out: &mut String) {
        let o = &self.options;
        let with_agent = self.scenarios.iter().any(|s| !s.agent_rounds.is_empty());
        if o.rate.is_some() {
            out.push_str(&format!(
                "\nAt this rate, p99 latency (c)/(a) (target at 1,000 msg/s: <= {TARGET_P99_C_OVER_A}): {}.\n",
                self.scenarios
                    .iter()
                    .map(|s| {
                        let ratio = s.median(2).p99_us / s.median(0).p99_us;
                        format!("{} {ratio:.2} {}", s.name(), met(ratio <= TARGET_P99_C_OVER_A))
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            out.push_str(&format!(
                "\nPath taken by (c) ({}), from the broker log, median round: {}.\n",
                workers_setting(o.protected_workers.as_deref()),
                self.scenarios
                    .iter()
                    .map(|s| format!("{} {} verified on workers", s.name(), on_workers(s.median(2))))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            out.push_str(
                "\nThis run was rate-limited: msg/s is the offered rate, so the ratios and the ceiling fraction say \
                 nothing about capacity (compare CPU µs/msg and latency; each table shows the round with the median p50).\n",
            );
            return;
        }
        out.push_str("\nTargets of issue 16 (medians of the rounds):\n\n");
        let qos0: Vec<&Scenario> = self.scenarios.iter().filter(|s| s.qos == 0).collect();
        let qos1: Vec<&Scenario> = self.scenarios.iter().filter(|s| s.qos == 1).collect();
        let protected_labels = |s: &Scenario| s.protected().map(|k| s.label(k)).collect::<Vec<_>>().join(" / ");
        if with_agent && !qos0.is_empty() {
            out.push_str(&format!(
                "- protected QoS 0 throughput at least {TARGET_C_OVER_AGENT}x the agent baseline (d), best of {}: {}\n",
                protected_labels(qos0[0]),
                qos0.iter()
                    .filter_map(|s| {
                        let (k, ratio) = s.best_over_agent()?;
                        let d = s.agent_median()?;
                        if !d.complete() {
                            return Some(format!("{} B not judged: (d) delivered {} of {}", s.payload, d.delivered, d.expected));
                        }
                        let d = d.msgs_per_s;
                        Some(format!("{} B {} {:.0} / {d:.0} = {ratio:.2} {}", s.payload, s.label(k), s.median(k).msgs_per_s, verdict(ratio, TARGET_C_OVER_AGENT)))
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
        } else if !qos0.is_empty() {
            out.push_str("- protected QoS 0 throughput at least 10x the agent baseline: not judged (no (d) in this run)\n");
        }
        let growing: Vec<String> = qos0
            .iter()
            .filter_map(|s| {
                let grows = s.grows_with_cores()?;
                let series = s.by_worker_count();
                let figures = series.iter().map(|&(_, k)| format!("{:.0}", s.median(k).msgs_per_s)).collect::<Vec<_>>().join(" <= ");
                let labels = series.iter().map(|&(n, k)| format!("{} {n}", s.label(k))).collect::<Vec<_>>().join(", ");
                Some(format!("{} B ({labels} worker threads) {figures} {}", s.payload, met(grows)))
            })
            .collect();
        if !growing.is_empty() {
            out.push_str(&format!("- ... and growing with cores (no fewer msg/s with each worker thread added): {}\n", growing.join("; ")));
        }
        if !qos1.is_empty() {
            let single_thread = o.protected_workers.as_deref() == Some("off");
            out.push_str(&format!(
                "- QoS 1 protected at least {TARGET_C_OVER_CEILING}x its single-thread ceiling ((c), {}){}: {}\n",
                workers_setting(o.protected_workers.as_deref()),
                if single_thread { "" } else { ", which QoS 1 ignores (always synchronous)" },
                qos1.iter().map(|s| format!("{} B {:.3} {}", s.payload, s.c_over_ceiling(), verdict(s.c_over_ceiling(), TARGET_C_OVER_CEILING))).collect::<Vec<_>>().join("; ")
            ));
        }
        out.push_str(&format!(
            "- unprotected (b)/(a) unchanged (issue 7's bar, >= {TARGET_B_OVER_A}; (b) with mqseal's defaults): {}\n",
            self.scenarios
                .iter()
                .map(|s| format!(
                    "{} {:.3} {} (broker CPU µs/msg {:.1} / {:.1})",
                    s.name(),
                    s.ratio_to_a(1),
                    verdict(s.ratio_to_a(1), TARGET_B_OVER_A),
                    s.median_cpu_us(0),
                    s.median_cpu_us(1)
                ))
                .collect::<Vec<_>>()
                .join("; ")
        ));
        out.push_str("- P-256 verification within 1.2x of the fastest library: judged by scripts/bench (core/examples/verify_backends.rs); p99 at 1,000 msg/s: by the fixed-rate run (`--rate 1000`).\n");
        out.push_str(&format!(
            "\nTargets of issue 7: (b)/(a) >= {TARGET_B_OVER_A} {}; (c)/ceiling >= {TARGET_C_OVER_CEILING} {}.\n",
            self.scenarios.iter().map(|s| format!("{} {}", s.name(), verdict(s.ratio_to_a(1), TARGET_B_OVER_A))).collect::<Vec<_>>().join(", "),
            self.scenarios.iter().map(|s| format!("{} {}", s.name(), verdict(s.c_over_ceiling(), TARGET_C_OVER_CEILING))).collect::<Vec<_>>().join(", "),
        ));
    }

    pub fn to_json(&self) -> serde_json::Value {
        let o = &self.options;
        let row_json = |r: &Row| {
            json!({
                "name": r.name, "expected": r.expected, "delivered": r.delivered, "elapsed_s": r.elapsed_s,
                "msgs_per_s": r.msgs_per_s, "p50_us": r.p50_us, "p99_us": r.p99_us,
                "max_us": r.max_us, "broker_cpu_s": r.broker_cpu_s, "cpu_us_per_msg": r.cpu_us_per_msg,
                "broker_thread_cpu_s": r.broker_thread_cpu_s, "clients_cpu_s": r.clients_cpu_s,
                "wire_payload_bytes": r.wire_payload_bytes,
                "broker_stats": r.broker_stats.map(|s| json!({
                    "accepted": s.accepted, "on_workers": s.on_workers, "denied": s.denied,
                    "audit_records": s.audit_records, "audit_refused": s.audit_refused,
                })),
                "log_notes": r.log_notes,
            })
        };
        let scenarios: Vec<_> = self
            .scenarios
            .iter()
            .map(|s| {
                let n = s.configurations();
                json!({
                    "qos": s.qos,
                    "payload": s.payload,
                    "labels": (0..n).map(|k| s.label(k)).collect::<Vec<_>>(),
                    "protected_workers": s.protected_workers,
                    "worker_configs": s.worker_configs,
                    "median": (0..n).map(|k| row_json(s.median(k))).collect::<Vec<_>>(),
                    "b_over_a": s.ratio_to_a(1),
                    "c_over_a": s.ratio_to_a(2),
                    "over_c": (0..n).map(|k| s.ratio_to_c(k)).collect::<Vec<_>>(),
                    "median_cpu_us_per_msg": (0..n).map(|k| s.median_cpu_us(k)).collect::<Vec<_>>(),
                    "verify_us": s.verify_us,
                    "verify_samples_us": s.verify_samples_us,
                    "agent_median": s.agent_median().map(row_json),
                    "c_over_agent": s.c_over_agent(),
                    "best_over_agent": s.best_over_agent().map(|(k, r)| json!({"label": s.label(k), "ratio": r})),
                    "grows_with_cores": s.grows_with_cores(),
                    "path_warnings": s.path_warnings(),
                    "incomplete": s.incomplete(),
                    "agent_rounds": s.agent_rounds.iter().map(row_json).collect::<Vec<_>>(),
                    "ceiling_msgs_per_s": s.ceiling_msgs_per_s(),
                    "c_over_ceiling": s.c_over_ceiling(),
                    "rounds": s.rounds.iter().map(|r| r.iter().map(row_json).collect::<Vec<_>>()).collect::<Vec<_>>(),
                })
            })
            .collect();
        json!({
            "cpu_model": self.cpu_model,
            "verification_backend": self.verification_backend,
            "options": {
                "messages": o.messages, "publishers": o.publishers, "subscribers": o.subscribers, "qos": o.qos,
                "payloads": o.payloads, "rate": o.rate, "inflight": o.inflight, "rounds": o.rounds,
                "subscriber_reads": o.subscriber_reads(),
                "audit_durability": o.audit_durability,
                "protected_workers": o.protected_workers, "worker_configs": o.worker_configs,
                "offload_above": o.offload_above, "auto_verify_workers": super::auto_verify_workers(),
                "verify_samples": o.verify_samples, "agent": o.agent_python.is_some(), "agent_messages": o.agent_messages,
            },
            "targets": {
                "b_over_a": TARGET_B_OVER_A, "c_over_ceiling": TARGET_C_OVER_CEILING,
                "c_over_agent": TARGET_C_OVER_AGENT, "p99_c_over_a_at_1000": TARGET_P99_C_OVER_A,
            },
            "scenarios": scenarios,
        })
    }
}

/// Configuration k's setting as the latency table names it.
fn config_setting(s: &Scenario, k: usize) -> String {
    match k {
        0 => "plain Mosquitto".to_string(),
        1 => "mqseal, unprotected".to_string(),
        _ => format!("mqseal, protected, {}", workers_setting(s.workers_of(k))),
    }
}
