//! `rayefa instance-types`: instance types with their size and EFA abilities (the seed guide's
//! step 2), every page of DescribeInstanceTypes followed.

use aws_sdk_ec2::types::{Filter, InstanceTypeInfo};
use serde::Serialize;

use super::client::Clients;
use super::error::ApiError;

/// One instance type, as the table shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct InstanceTypeRow {
    /// For example `i7i.24xlarge`.
    pub(crate) instance_type: String,
    /// `x86_64`, `arm64`, ...
    pub(crate) architectures: Vec<String>,
    /// Default vCPUs.
    pub(crate) vcpus: i32,
    /// Default physical cores.
    pub(crate) cores: i32,
    /// Memory in GiB.
    pub(crate) memory_gib: f64,
    /// Whether the type supports EFA at all.
    pub(crate) efa_supported: bool,
    /// The most EFA interfaces an instance of this type can have.
    pub(crate) max_efa_interfaces: i32,
    /// Network cards (each extra EFA interface needs its own card index).
    pub(crate) network_cards: i32,
}

impl InstanceTypeRow {
    /// The row for what EC2 says about a type.
    pub(crate) fn from_info(info: &InstanceTypeInfo) -> Self {
        let network = info.network_info();
        Self {
            instance_type: info
                .instance_type()
                .map(|t| t.as_str().to_owned())
                .unwrap_or_default(),
            architectures: info
                .processor_info()
                .map(|p| {
                    p.supported_architectures()
                        .iter()
                        .map(|a| a.as_str().to_owned())
                        .collect()
                })
                .unwrap_or_default(),
            vcpus: info
                .v_cpu_info()
                .and_then(|v| v.default_v_cpus())
                .unwrap_or(0),
            cores: info
                .v_cpu_info()
                .and_then(|v| v.default_cores())
                .unwrap_or(0),
            memory_gib: info
                .memory_info()
                .and_then(|m| m.size_in_mib())
                .map_or(0.0, |mib| mib as f64 / 1024.0),
            efa_supported: network.and_then(|n| n.efa_supported()).unwrap_or(false),
            max_efa_interfaces: network
                .and_then(|n| n.efa_info())
                .and_then(|e| e.maximum_efa_interfaces())
                .unwrap_or(0),
            network_cards: network.and_then(|n| n.maximum_network_cards()).unwrap_or(1),
        }
    }

    /// The part of the name before the size, `i7i` of `i7i.24xlarge`.
    fn family(&self) -> &str {
        self.instance_type
            .split_once('.')
            .map_or(self.instance_type.as_str(), |(family, _)| family)
    }
}

/// The name patterns for `--family` values: `7i` matches any type whose name contains `7i`
/// (`m7i`, `c7i`, `u7i-6tb`), as the seed guide's `*7i*`; a value with a `*` or `.` is taken
/// as the pattern itself.
pub(crate) fn family_patterns(families: &[String]) -> Vec<String> {
    families
        .iter()
        .map(|f| {
            if f.contains('*') || f.contains('.') {
                f.clone()
            } else {
                format!("*{f}*")
            }
        })
        .collect()
}

/// Every instance type offered in the region that matches, sorted by family, then vCPUs,
/// memory and name.
pub(crate) async fn list(
    clients: &Clients,
    families: &[String],
    efa_only: bool,
) -> Result<Vec<InstanceTypeRow>, ApiError> {
    let mut request = clients.ec2.describe_instance_types();
    if !families.is_empty() {
        request = request.filters(
            Filter::builder()
                .name("instance-type")
                .set_values(Some(family_patterns(families)))
                .build(),
        );
    }
    if efa_only {
        request = request.filters(
            Filter::builder()
                .name("network-info.efa-supported")
                .values("true")
                .build(),
        );
    }
    let mut pages = request.into_paginator().items().send();
    let mut rows = Vec::new();
    while let Some(info) = pages
        .try_next()
        .await
        .map_err(|e| ApiError::from_sdk("describing instance types", e))?
    {
        rows.push(InstanceTypeRow::from_info(&info));
    }
    sort(&mut rows);
    Ok(rows)
}

fn sort(rows: &mut [InstanceTypeRow]) {
    rows.sort_by(|a, b| {
        a.family()
            .cmp(b.family())
            .then(a.vcpus.cmp(&b.vcpus))
            .then(a.memory_gib.total_cmp(&b.memory_gib))
            .then(a.instance_type.cmp(&b.instance_type))
    });
}

/// Memory for a table: whole GiB without decimals, otherwise one decimal.
pub(crate) fn format_gib(gib: f64) -> String {
    if gib.fract() == 0.0 {
        format!("{gib:.0}")
    } else {
        format!("{gib:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, vcpus: i32, memory_gib: f64) -> InstanceTypeRow {
        InstanceTypeRow {
            instance_type: name.into(),
            architectures: vec!["x86_64".into()],
            vcpus,
            cores: vcpus / 2,
            memory_gib,
            efa_supported: true,
            max_efa_interfaces: 1,
            network_cards: 1,
        }
    }

    #[test]
    fn rows_sort_by_family_then_size() {
        let mut rows = vec![
            row("m7i.48xlarge", 192, 768.0),
            row("c7i.metal-48xl", 192, 384.0),
            row("c7i.48xlarge", 192, 384.0),
            row("m7i.24xlarge", 96, 384.0),
        ];
        sort(&mut rows);
        let names: Vec<_> = rows.iter().map(|r| r.instance_type.as_str()).collect();
        assert_eq!(
            names,
            [
                "c7i.48xlarge",
                "c7i.metal-48xl",
                "m7i.24xlarge",
                "m7i.48xlarge"
            ]
        );
    }

    #[test]
    fn families_become_the_seed_guides_patterns() {
        let families = ["7i", "8g", "c7a.*"].map(String::from);
        assert_eq!(family_patterns(&families), ["*7i*", "*8g*", "c7a.*"]);
    }

    #[test]
    fn memory_prints_without_needless_decimals() {
        assert_eq!(format_gib(1536.0), "1536");
        assert_eq!(format_gib(0.5), "0.5");
    }
}
