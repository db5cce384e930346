//! `rayefa env`: finds what a cluster file refers to (the seed guide's step 1) — region,
//! account, the VPC and private subnet by tag, the latest Amazon Linux 2023 AMIs, the head and
//! worker security groups by name — and says, for anything missing, what was searched.

use aws_sdk_ec2::types::Filter;
use serde::Serialize;

use super::client::Clients;
use super::error::ApiError;

/// The SSM public parameter of the latest Amazon Linux 2023 AMI for x86_64.
pub(crate) const AL2023_X86_64: &str =
    "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64";
/// The SSM public parameter of the latest Amazon Linux 2023 AMI for arm64.
pub(crate) const AL2023_ARM64: &str =
    "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-arm64";

/// A tag to search by, `KEY=VALUE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TagFilter {
    /// The tag's key.
    pub(crate) key: String,
    /// The tag's value.
    pub(crate) value: String,
}

impl std::str::FromStr for TagFilter {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.split_once('=') {
            Some((key, value)) if !key.is_empty() => Ok(TagFilter {
                key: key.to_owned(),
                value: value.to_owned(),
            }),
            _ => Err(format!(
                "`{text}` is not KEY=VALUE (for example Name=RayVPC)"
            )),
        }
    }
}

impl std::fmt::Display for TagFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.key, self.value)
    }
}

impl TagFilter {
    fn filter(&self) -> Filter {
        Filter::builder()
            .name(format!("tag:{}", self.key))
            .values(&self.value)
            .build()
    }
}

/// What to look for.
#[derive(Debug, Clone)]
pub(crate) struct Search {
    /// The VPC's tag.
    pub(crate) vpc_tag: TagFilter,
    /// The private subnet's tag, searched in that VPC.
    pub(crate) subnet_tag: TagFilter,
    /// The head's security group name, searched in that VPC.
    pub(crate) head_group: String,
    /// The workers' security group name, searched in that VPC.
    pub(crate) worker_group: String,
}

/// One discovered value, under the variable name the seed guide exports it as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Discovered {
    /// The shell variable, for example `VPC_ID`.
    pub(crate) variable: &'static str,
    /// The value, when found.
    pub(crate) value: Option<String>,
    /// How it was found, or what was searched without success.
    pub(crate) source: String,
    /// Why there is no value, when there is none.
    pub(crate) problem: Option<String>,
}

impl Discovered {
    fn found(variable: &'static str, value: String, source: String) -> Self {
        Self {
            variable,
            value: Some(value),
            source,
            problem: None,
        }
    }

    fn missing(variable: &'static str, source: String, problem: String) -> Self {
        Self {
            variable,
            value: None,
            source,
            problem: Some(problem),
        }
    }
}

/// Looks everything up. An error of the account lookup (credentials, endpoint) ends the
/// search; later lookups that find nothing, or more than one thing, are reported per value.
pub(crate) async fn discover(
    clients: &Clients,
    search: &Search,
) -> Result<Vec<Discovered>, ApiError> {
    let identity = clients
        .sts
        .get_caller_identity()
        .send()
        .await
        .map_err(|e| ApiError::from_sdk("asking STS who the credentials belong to", e))?;
    let mut found = vec![
        Discovered::found(
            "AWS_REGION",
            clients.region.clone(),
            "the AWS configuration (--region, AWS_REGION or the profile)".into(),
        ),
        match identity.account() {
            Some(account) => Discovered::found(
                "AWS_ACCOUNT_ID",
                account.to_owned(),
                "sts:GetCallerIdentity".into(),
            ),
            None => Discovered::missing(
                "AWS_ACCOUNT_ID",
                "sts:GetCallerIdentity".into(),
                "STS answered without an account".into(),
            ),
        },
    ];
    let vpc = find_vpc(clients, &search.vpc_tag).await;
    let vpc_id = vpc.value.clone();
    found.push(vpc);
    found.extend(find_amis(clients).await);
    match vpc_id {
        Some(vpc_id) => {
            found.push(find_subnet(clients, &vpc_id, &search.subnet_tag).await);
            found.push(find_group(clients, &vpc_id, "HEAD_SG_ID", &search.head_group).await);
            found.push(find_group(clients, &vpc_id, "WORKER_SG_ID", &search.worker_group).await);
        }
        None => {
            let problem = "needs the VPC, which was not found".to_owned();
            found.push(Discovered::missing(
                "PRIV_SUBNET_ID",
                format!("subnet tagged {}", search.subnet_tag),
                problem.clone(),
            ));
            for (variable, name) in [
                ("HEAD_SG_ID", &search.head_group),
                ("WORKER_SG_ID", &search.worker_group),
            ] {
                found.push(Discovered::missing(
                    variable,
                    format!("security group named {name}"),
                    problem.clone(),
                ));
            }
        }
    }
    Ok(found)
}

/// Exactly one id among `ids`, or the problem with them.
fn exactly_one(ids: Vec<String>, what: &str) -> Result<String, String> {
    match ids.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(format!("no {what}")),
        many => Err(format!(
            "{} {what}s ({}); make the tag or name unique",
            many.len(),
            many.join(", ")
        )),
    }
}

fn settle(
    variable: &'static str,
    source: String,
    ids: Result<Vec<String>, ApiError>,
    what: &str,
) -> Discovered {
    match ids {
        Ok(ids) => match exactly_one(ids, what) {
            Ok(id) => Discovered::found(variable, id, source),
            Err(problem) => Discovered::missing(variable, source, problem),
        },
        Err(error) => Discovered::missing(variable, source, error.to_string()),
    }
}

async fn find_vpc(clients: &Clients, tag: &TagFilter) -> Discovered {
    let source = format!("VPC tagged {tag}");
    let ids = clients
        .ec2
        .describe_vpcs()
        .filters(tag.filter())
        .send()
        .await
        .map(|out| {
            out.vpcs()
                .iter()
                .filter_map(|v| v.vpc_id().map(str::to_owned))
                .collect()
        })
        .map_err(|e| ApiError::from_sdk(format!("describing VPCs tagged {tag}"), e));
    settle("VPC_ID", source.clone(), ids, &format!("VPC tagged {tag}"))
}

async fn find_subnet(clients: &Clients, vpc_id: &str, tag: &TagFilter) -> Discovered {
    let source = format!("subnet tagged {tag} in {vpc_id}");
    let ids = clients
        .ec2
        .describe_subnets()
        .filters(tag.filter())
        .filters(Filter::builder().name("vpc-id").values(vpc_id).build())
        .send()
        .await
        .map(|out| {
            out.subnets()
                .iter()
                .filter_map(|s| s.subnet_id().map(str::to_owned))
                .collect()
        })
        .map_err(|e| ApiError::from_sdk(format!("describing subnets tagged {tag}"), e));
    settle(
        "PRIV_SUBNET_ID",
        source.clone(),
        ids,
        &format!("subnet tagged {tag} in {vpc_id}"),
    )
}

async fn find_group(
    clients: &Clients,
    vpc_id: &str,
    variable: &'static str,
    name: &str,
) -> Discovered {
    let source = format!("security group named {name} in {vpc_id}");
    let ids = clients
        .ec2
        .describe_security_groups()
        .filters(Filter::builder().name("group-name").values(name).build())
        .filters(Filter::builder().name("vpc-id").values(vpc_id).build())
        .send()
        .await
        .map(|out| {
            out.security_groups()
                .iter()
                .filter_map(|g| g.group_id().map(str::to_owned))
                .collect()
        })
        .map_err(|e| ApiError::from_sdk(format!("describing security groups named {name}"), e));
    settle(
        variable,
        source.clone(),
        ids,
        &format!("security group named {name} in {vpc_id}"),
    )
}

async fn find_amis(clients: &Clients) -> Vec<Discovered> {
    let wanted = [("X86_AMI_ID", AL2023_X86_64), ("ARM_AMI_ID", AL2023_ARM64)];
    let answer = clients
        .ssm
        .get_parameters()
        .names(AL2023_X86_64)
        .names(AL2023_ARM64)
        .send()
        .await
        .map_err(|e| {
            ApiError::from_sdk("reading the Amazon Linux 2023 AMI parameters from SSM", e)
        });
    wanted
        .into_iter()
        .map(|(variable, parameter)| {
            let source = format!("SSM parameter {parameter}");
            match &answer {
                Ok(out) => match out
                    .parameters()
                    .iter()
                    .find(|p| p.name() == Some(parameter))
                    .and_then(|p| p.value())
                {
                    Some(ami) => Discovered::found(variable, ami.to_owned(), source),
                    None => Discovered::missing(
                        variable,
                        source,
                        format!("SSM has no parameter {parameter} in {}", clients.region),
                    ),
                },
                Err(error) => Discovered::missing(variable, source, error.to_string()),
            }
        })
        .collect()
}

/// `export NAME='value'` lines for the values found, which a shell can `eval`.
pub(crate) fn export_lines(found: &[Discovered]) -> String {
    found
        .iter()
        .filter_map(|d| {
            let value = d.value.as_ref()?;
            Some(format!(
                "export {}='{}'\n",
                d.variable,
                value.replace('\'', r"'\''")
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_filters_parse_key_equals_value() {
        let tag: TagFilter = "Name=RayVPC".parse().expect("valid");
        assert_eq!(tag.key, "Name");
        assert_eq!(tag.value, "RayVPC");
        assert_eq!(tag.to_string(), "Name=RayVPC");
        assert!("RayVPC".parse::<TagFilter>().is_err());
        assert!("=x".parse::<TagFilter>().is_err());
    }

    #[test]
    fn more_than_one_match_is_a_problem_that_lists_them() {
        assert_eq!(exactly_one(vec!["vpc-1".into()], "VPC"), Ok("vpc-1".into()));
        assert_eq!(
            exactly_one(vec![], "VPC tagged Name=X"),
            Err("no VPC tagged Name=X".into())
        );
        let many = exactly_one(vec!["vpc-1".into(), "vpc-2".into()], "VPC").expect_err("two");
        assert!(many.contains("vpc-1, vpc-2"), "{many}");
    }

    #[test]
    fn export_lines_quote_values_and_skip_missing_ones() {
        let found = vec![
            Discovered::found("VPC_ID", "vpc-1".into(), String::new()),
            Discovered::missing("PRIV_SUBNET_ID", String::new(), "none".into()),
            Discovered::found("ODD", "it's".into(), String::new()),
        ];
        assert_eq!(
            export_lines(&found),
            "export VPC_ID='vpc-1'\nexport ODD='it'\\''s'\n"
        );
    }
}
