//! A node type's `node_config`, which Ray passes to RunInstances as its arguments.
//!
//! Every RunInstances argument is mapped key by key onto the SDK's input builder, nested
//! structures included, so whatever a Ray user writes there reaches EC2 as written; keys that
//! RunInstances does not take are refused with their YAML path. On top of RunInstances, Ray's
//! own `SubnetIds` (subnets tried in order) is understood. The arguments rayefa owns (counts,
//! user data, client token) are refused with the reason, and IMDSv2 is required unless the
//! file says otherwise.

use aws_sdk_ec2::operation::run_instances::RunInstancesInput;
use aws_sdk_ec2::operation::run_instances::builders::RunInstancesInputBuilder;
use aws_sdk_ec2::types::{
    AmdSevSnpSpecification, BlockDeviceMapping, CapacityReservationPreference,
    CapacityReservationSpecification, CapacityReservationTarget,
    ConnectionTrackingSpecificationRequest, CpuOptionsRequest, CreditSpecificationRequest,
    EbsBlockDevice, EnaSrdSpecificationRequest, EnaSrdUdpSpecificationRequest,
    EnclaveOptionsRequest, HibernationOptionsRequest, HostnameType, HttpTokensState,
    IamInstanceProfileSpecification, InstanceAutoRecoveryState, InstanceBandwidthWeighting,
    InstanceInterruptionBehavior, InstanceIpv6Address, InstanceMaintenanceOptionsRequest,
    InstanceMarketOptionsRequest, InstanceMetadataEndpointState, InstanceMetadataOptionsRequest,
    InstanceMetadataProtocolState, InstanceMetadataTagsState,
    InstanceNetworkInterfaceSpecification, InstanceNetworkPerformanceOptionsRequest,
    InstanceSecondaryInterfaceSpecificationRequest, InstanceType, Ipv4PrefixSpecificationRequest,
    Ipv6PrefixSpecificationRequest, LaunchTemplateSpecification, LicenseConfigurationRequest,
    MarketType, NestedVirtualizationSpecification, OperatorRequest, Placement,
    PrivateDnsNameOptionsRequest, PrivateIpAddressSpecification, ResourceType,
    RunInstancesMonitoringEnabled, SecondaryInterfaceType, ShutdownBehavior, SpotInstanceType,
    SpotMarketOptions, Tag, TagSpecification, Tenancy, VolumeType,
};
use serde_json::Value;

use super::fields::{Fields, NodeConfigError, Result};
use super::tags;

/// The interface types RunInstances accepts for a network interface.
const INTERFACE_TYPES: &[&str] = &["interface", "efa", "efa-only"];

/// A node type's launch arguments, checked.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NodeConfig {
    /// The RunInstances arguments from the file, with IMDSv2 filled in; the launcher adds the
    /// counts, user data, tags and client token.
    pub(crate) input: RunInstancesInputBuilder,
    /// Ray's `SubnetIds`: subnets to launch in, tried in order when one has no capacity.
    pub(crate) subnet_ids: Vec<String>,
    /// Where the mapping is in the cluster file, for messages.
    pub(crate) path: String,
}

/// How a node type names its instance profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ProfileRef {
    /// `IamInstanceProfile.Name`
    Name(String),
    /// `IamInstanceProfile.Arn`
    Arn(String),
}

impl NodeConfig {
    /// The instance type, if the file gives one (a launch template may instead).
    pub(crate) fn instance_type(&self) -> Option<&str> {
        self.input
            .get_instance_type()
            .as_ref()
            .map(InstanceType::as_str)
    }

    /// The AMI, if the file gives one.
    pub(crate) fn image_id(&self) -> Option<&str> {
        self.input.get_image_id().as_deref()
    }

    /// The same arguments launching `image` (one looked up for a missing `ImageId` or Ray's
    /// `latest_dlami`).
    pub(crate) fn with_image(&self, image: &str) -> NodeConfig {
        NodeConfig {
            input: self.input.clone().image_id(image),
            ..self.clone()
        }
    }

    /// The network interfaces the file asks for.
    pub(crate) fn network_interfaces(&self) -> &[InstanceNetworkInterfaceSpecification] {
        self.input
            .get_network_interfaces()
            .as_deref()
            .unwrap_or(&[])
    }

    /// How many EFA interfaces (`efa` or `efa-only`) the file asks for.
    pub(crate) fn efa_interfaces(&self) -> usize {
        self.network_interfaces()
            .iter()
            .filter(|ni| matches!(ni.interface_type(), Some("efa" | "efa-only")))
            .count()
    }

    /// Every subnet the node type may launch in: `SubnetId`, Ray's `SubnetIds`, and the
    /// subnets of its network interfaces, without repeats.
    pub(crate) fn subnets(&self) -> Vec<String> {
        distinct(
            self.input
                .get_subnet_id()
                .iter()
                .chain(self.subnet_ids.iter())
                .chain(
                    self.network_interfaces()
                        .iter()
                        .filter_map(|ni| ni.subnet_id.as_ref()),
                ),
        )
    }

    /// Every security group the node type's instances get: `SecurityGroupIds` and the groups
    /// of its network interfaces, without repeats.
    pub(crate) fn security_groups(&self) -> Vec<String> {
        distinct(
            self.input
                .get_security_group_ids()
                .iter()
                .flatten()
                .chain(self.network_interfaces().iter().flat_map(|ni| ni.groups())),
        )
    }

    /// The security groups of the EFA interfaces, which need the self-referencing rules.
    pub(crate) fn efa_security_groups(&self) -> Vec<String> {
        distinct(
            self.network_interfaces()
                .iter()
                .filter(|ni| matches!(ni.interface_type(), Some("efa" | "efa-only")))
                .flat_map(|ni| ni.groups()),
        )
    }

    /// `Placement.GroupName`.
    pub(crate) fn placement_group(&self) -> Option<&str> {
        self.input
            .get_placement()
            .as_ref()
            .and_then(Placement::group_name)
    }

    /// `Placement.AvailabilityZone`.
    pub(crate) fn availability_zone(&self) -> Option<&str> {
        self.input
            .get_placement()
            .as_ref()
            .and_then(Placement::availability_zone)
    }

    /// `IamInstanceProfile`.
    pub(crate) fn instance_profile(&self) -> Option<ProfileRef> {
        let profile = self.input.get_iam_instance_profile().as_ref()?;
        match (profile.name(), profile.arn()) {
            (Some(name), _) => Some(ProfileRef::Name(name.to_owned())),
            (None, Some(arn)) => Some(ProfileRef::Arn(arn.to_owned())),
            (None, None) => None,
        }
    }
}

/// Reads the `node_config` found at `path` (for example
/// `available_node_types.efa_worker_node.node_config`).
pub(crate) fn parse(value: &Value, path: &str) -> Result<NodeConfig> {
    let mut f = Fields::of(value, path.to_owned())?;
    f.reserved(
        "UserData",
        "rayefa writes the user data that installs its agent; put boot-time commands in \
         `initialization_commands` instead",
    )?;
    f.reserved(
        "MinCount",
        "rayefa sets the count from min_workers; remove MinCount",
    )?;
    f.reserved(
        "MaxCount",
        "rayefa sets the count from min_workers; remove MaxCount",
    )?;
    f.reserved(
        "ClientToken",
        "rayefa sets a client token per launch so a retried launch cannot start twice",
    )?;
    f.reserved(
        "DryRun",
        "use `rayefa validate` to check a cluster file without launching",
    )?;

    let input = RunInstancesInput::builder()
        .set_block_device_mappings(f.objects("BlockDeviceMappings", block_device_mapping)?)
        // Ray takes an empty ImageId for a missing one, which rayefa looks up (image.rs).
        .set_image_id(f.string("ImageId")?.filter(|image| !image.is_empty()))
        // Any text is passed on: EC2 adds instance types faster than SDK releases; preflight
        // asks EC2 whether the type exists.
        .set_instance_type(
            f.string("InstanceType")?
                .map(|t| InstanceType::from(t.as_str())),
        )
        .set_ipv6_address_count(f.int("Ipv6AddressCount")?)
        .set_ipv6_addresses(f.objects("Ipv6Addresses", ipv6_address)?)
        .set_kernel_id(f.string("KernelId")?)
        .set_key_name(f.string("KeyName")?)
        .set_monitoring(f.object("Monitoring", |m| {
            Ok(RunInstancesMonitoringEnabled::builder()
                .set_enabled(m.boolean("Enabled")?)
                .build())
        })?)
        .set_placement(f.object("Placement", placement)?)
        .set_ramdisk_id(f.string("RamdiskId")?)
        .set_security_group_ids(f.strings("SecurityGroupIds")?)
        .set_security_groups(f.strings("SecurityGroups")?)
        .set_subnet_id(f.string("SubnetId")?)
        .set_tag_specifications(f.objects("TagSpecifications", tag_specification)?)
        .set_launch_template(f.object("LaunchTemplate", |t| {
            Ok(LaunchTemplateSpecification::builder()
                .set_launch_template_id(t.string("LaunchTemplateId")?)
                .set_launch_template_name(t.string("LaunchTemplateName")?)
                .set_version(t.string("Version")?)
                .build())
        })?)
        .set_instance_market_options(f.object("InstanceMarketOptions", market_options)?)
        .set_credit_specification(f.object("CreditSpecification", |c| {
            Ok(CreditSpecificationRequest::builder()
                .set_cpu_credits(c.string("CpuCredits")?)
                .build())
        })?)
        .set_cpu_options(f.object("CpuOptions", |c| {
            Ok(CpuOptionsRequest::builder()
                .set_core_count(c.int("CoreCount")?)
                .set_threads_per_core(c.int("ThreadsPerCore")?)
                .set_amd_sev_snp(c.choice("AmdSevSnp", AmdSevSnpSpecification::values())?)
                .set_nested_virtualization(c.choice(
                    "NestedVirtualization",
                    NestedVirtualizationSpecification::values(),
                )?)
                .build())
        })?)
        .set_capacity_reservation_specification(
            f.object("CapacityReservationSpecification", capacity_reservation)?,
        )
        .set_hibernation_options(f.object("HibernationOptions", |h| {
            Ok(HibernationOptionsRequest::builder()
                .set_configured(h.boolean("Configured")?)
                .build())
        })?)
        .set_license_specifications(f.objects("LicenseSpecifications", |l| {
            Ok(LicenseConfigurationRequest::builder()
                .set_license_configuration_arn(l.string("LicenseConfigurationArn")?)
                .build())
        })?)
        .set_metadata_options(f.object("MetadataOptions", metadata_options)?)
        .set_enclave_options(f.object("EnclaveOptions", |e| {
            Ok(EnclaveOptionsRequest::builder()
                .set_enabled(e.boolean("Enabled")?)
                .build())
        })?)
        .set_private_dns_name_options(f.object("PrivateDnsNameOptions", |p| {
            Ok(PrivateDnsNameOptionsRequest::builder()
                .set_hostname_type(p.choice("HostnameType", HostnameType::values())?)
                .set_enable_resource_name_dns_a_record(p.boolean("EnableResourceNameDnsARecord")?)
                .set_enable_resource_name_dns_aaaa_record(
                    p.boolean("EnableResourceNameDnsAAAARecord")?,
                )
                .build())
        })?)
        .set_maintenance_options(f.object("MaintenanceOptions", |m| {
            Ok(InstanceMaintenanceOptionsRequest::builder()
                .set_auto_recovery(m.choice("AutoRecovery", InstanceAutoRecoveryState::values())?)
                .build())
        })?)
        .set_disable_api_stop(f.boolean("DisableApiStop")?)
        .set_enable_primary_ipv6(f.boolean("EnablePrimaryIpv6")?)
        .set_network_performance_options(f.object("NetworkPerformanceOptions", |n| {
            Ok(InstanceNetworkPerformanceOptionsRequest::builder()
                .set_bandwidth_weighting(
                    n.choice("BandwidthWeighting", InstanceBandwidthWeighting::values())?,
                )
                .build())
        })?)
        .set_operator(f.object("Operator", |o| {
            Ok(OperatorRequest::builder()
                .set_principal(o.string("Principal")?)
                .build())
        })?)
        .set_secondary_interfaces(f.objects("SecondaryInterfaces", secondary_interface)?)
        .set_disable_api_termination(f.boolean("DisableApiTermination")?)
        .set_instance_initiated_shutdown_behavior(f.choice(
            "InstanceInitiatedShutdownBehavior",
            ShutdownBehavior::values(),
        )?)
        .set_private_ip_address(f.string("PrivateIpAddress")?)
        .set_additional_info(f.string("AdditionalInfo")?)
        .set_network_interfaces(f.objects("NetworkInterfaces", network_interface)?)
        .set_iam_instance_profile(f.object("IamInstanceProfile", |p| {
            Ok(IamInstanceProfileSpecification::builder()
                .set_arn(p.string("Arn")?)
                .set_name(p.string("Name")?)
                .build())
        })?)
        .set_ebs_optimized(f.boolean("EbsOptimized")?);
    let subnet_ids = f.strings("SubnetIds")?.unwrap_or_default();
    f.finish()?;

    let config = NodeConfig {
        input: require_imdsv2(input),
        subnet_ids,
        path: path.to_owned(),
    };
    check_combinations(&config, &f)?;
    Ok(config)
}

/// Ray's rules about keys that cannot stand together.
fn check_combinations(config: &NodeConfig, f: &Fields<'_>) -> Result<()> {
    let input = &config.input;
    if input.get_network_interfaces().is_some() {
        for (present, key) in [
            (input.get_subnet_id().is_some(), "SubnetId"),
            (!config.subnet_ids.is_empty(), "SubnetIds"),
            (input.get_security_group_ids().is_some(), "SecurityGroupIds"),
        ] {
            if present {
                return Err(NodeConfigError::at(
                    f.path_of(key),
                    format!(
                        "`{key}` cannot stand beside `NetworkInterfaces`: give each \
                         interface its `SubnetId` and `Groups` instead"
                    ),
                ));
            }
        }
    }
    for (i, spec) in input.get_tag_specifications().iter().flatten().enumerate() {
        if let Some(key) = spec
            .tags()
            .iter()
            .filter_map(|t| t.key())
            .find(|k| tags::is_reserved(k))
        {
            return Err(NodeConfigError::at(
                format!("{}[{i}].Tags", f.path_of("TagSpecifications")),
                format!("tag `{key}` is set by rayefa, which finds its nodes by it"),
            ));
        }
    }
    if input.get_subnet_id().is_some() && !config.subnet_ids.is_empty() {
        return Err(NodeConfigError::at(
            f.path_of("SubnetIds"),
            "give either `SubnetId` or `SubnetIds`, not both",
        ));
    }
    Ok(())
}

/// IMDSv2 (`HttpTokens: required`) unless the file chose otherwise.
fn require_imdsv2(input: RunInstancesInputBuilder) -> RunInstancesInputBuilder {
    let options = input.get_metadata_options().clone();
    if options.as_ref().and_then(|o| o.http_tokens()).is_some() {
        return input;
    }
    let options = match options {
        Some(o) => InstanceMetadataOptionsRequest::builder()
            .set_http_put_response_hop_limit(o.http_put_response_hop_limit)
            .set_http_endpoint(o.http_endpoint)
            .set_http_protocol_ipv6(o.http_protocol_ipv6)
            .set_instance_metadata_tags(o.instance_metadata_tags),
        None => InstanceMetadataOptionsRequest::builder(),
    };
    input.metadata_options(options.http_tokens(HttpTokensState::Required).build())
}

fn block_device_mapping(m: &mut Fields<'_>) -> Result<BlockDeviceMapping> {
    Ok(BlockDeviceMapping::builder()
        .set_device_name(m.string("DeviceName")?)
        .set_virtual_name(m.string("VirtualName")?)
        .set_no_device(m.string("NoDevice")?)
        .set_ebs(m.object("Ebs", |e| {
            Ok(EbsBlockDevice::builder()
                .set_delete_on_termination(e.boolean("DeleteOnTermination")?)
                .set_iops(e.int("Iops")?)
                .set_snapshot_id(e.string("SnapshotId")?)
                .set_volume_size(e.int("VolumeSize")?)
                .set_volume_type(e.choice("VolumeType", VolumeType::values())?)
                .set_kms_key_id(e.string("KmsKeyId")?)
                .set_throughput(e.int("Throughput")?)
                .set_outpost_arn(e.string("OutpostArn")?)
                .set_availability_zone(e.string("AvailabilityZone")?)
                .set_encrypted(e.boolean("Encrypted")?)
                .set_volume_initialization_rate(e.int("VolumeInitializationRate")?)
                .set_availability_zone_id(e.string("AvailabilityZoneId")?)
                .set_ebs_card_index(e.int("EbsCardIndex")?)
                .build())
        })?)
        .build())
}

fn ipv6_address(a: &mut Fields<'_>) -> Result<InstanceIpv6Address> {
    Ok(InstanceIpv6Address::builder()
        .set_ipv6_address(a.string("Ipv6Address")?)
        .set_is_primary_ipv6(a.boolean("IsPrimaryIpv6")?)
        .build())
}

fn placement(p: &mut Fields<'_>) -> Result<Placement> {
    Ok(Placement::builder()
        .set_availability_zone_id(p.string("AvailabilityZoneId")?)
        .set_affinity(p.string("Affinity")?)
        .set_group_name(p.string("GroupName")?)
        .set_partition_number(p.int("PartitionNumber")?)
        .set_host_id(p.string("HostId")?)
        .set_tenancy(p.choice("Tenancy", Tenancy::values())?)
        .set_spread_domain(p.string("SpreadDomain")?)
        .set_host_resource_group_arn(p.string("HostResourceGroupArn")?)
        .set_group_id(p.string("GroupId")?)
        .set_availability_zone(p.string("AvailabilityZone")?)
        .build())
}

fn tag_specification(s: &mut Fields<'_>) -> Result<TagSpecification> {
    Ok(TagSpecification::builder()
        .set_resource_type(s.choice("ResourceType", ResourceType::values())?)
        .set_tags(s.objects("Tags", |t| {
            Ok(Tag::builder()
                .set_key(t.string("Key")?)
                .set_value(t.string("Value")?)
                .build())
        })?)
        .build())
}

fn market_options(m: &mut Fields<'_>) -> Result<InstanceMarketOptionsRequest> {
    Ok(InstanceMarketOptionsRequest::builder()
        .set_market_type(m.choice("MarketType", MarketType::values())?)
        .set_spot_options(m.object("SpotOptions", |s| {
            let valid_until = match s.string("ValidUntil")? {
                None => None,
                Some(text) => Some(
                    aws_sdk_ec2::primitives::DateTime::from_str(
                        &text,
                        aws_sdk_ec2::primitives::DateTimeFormat::DateTime,
                    )
                    .map_err(|e| {
                        NodeConfigError::at(
                            s.path_of("ValidUntil"),
                            format!("`{text}` is not an RFC 3339 time: {e}"),
                        )
                    })?,
                ),
            };
            Ok(SpotMarketOptions::builder()
                .set_max_price(s.string("MaxPrice")?)
                .set_spot_instance_type(s.choice("SpotInstanceType", SpotInstanceType::values())?)
                .set_block_duration_minutes(s.int("BlockDurationMinutes")?)
                .set_valid_until(valid_until)
                .set_instance_interruption_behavior(s.choice(
                    "InstanceInterruptionBehavior",
                    InstanceInterruptionBehavior::values(),
                )?)
                .build())
        })?)
        .build())
}

fn capacity_reservation(c: &mut Fields<'_>) -> Result<CapacityReservationSpecification> {
    Ok(CapacityReservationSpecification::builder()
        .set_capacity_reservation_preference(c.choice(
            "CapacityReservationPreference",
            CapacityReservationPreference::values(),
        )?)
        .set_capacity_reservation_target(c.object("CapacityReservationTarget", |t| {
            Ok(CapacityReservationTarget::builder()
                .set_capacity_reservation_id(t.string("CapacityReservationId")?)
                .set_capacity_reservation_resource_group_arn(
                    t.string("CapacityReservationResourceGroupArn")?,
                )
                .build())
        })?)
        .build())
}

fn metadata_options(m: &mut Fields<'_>) -> Result<InstanceMetadataOptionsRequest> {
    Ok(InstanceMetadataOptionsRequest::builder()
        .set_http_tokens(m.choice("HttpTokens", HttpTokensState::values())?)
        .set_http_put_response_hop_limit(m.int("HttpPutResponseHopLimit")?)
        .set_http_endpoint(m.choice("HttpEndpoint", InstanceMetadataEndpointState::values())?)
        .set_http_protocol_ipv6(
            m.choice("HttpProtocolIpv6", InstanceMetadataProtocolState::values())?,
        )
        .set_instance_metadata_tags(
            m.choice("InstanceMetadataTags", InstanceMetadataTagsState::values())?,
        )
        .build())
}

fn secondary_interface(
    s: &mut Fields<'_>,
) -> Result<InstanceSecondaryInterfaceSpecificationRequest> {
    Ok(InstanceSecondaryInterfaceSpecificationRequest::builder()
        .set_delete_on_termination(s.boolean("DeleteOnTermination")?)
        .set_device_index(s.int("DeviceIndex")?)
        .set_private_ip_address_count(s.int("PrivateIpAddressCount")?)
        .set_secondary_subnet_id(s.string("SecondarySubnetId")?)
        .set_interface_type(s.choice("InterfaceType", SecondaryInterfaceType::values())?)
        .set_network_card_index(s.int("NetworkCardIndex")?)
        .build())
}

fn network_interface(n: &mut Fields<'_>) -> Result<InstanceNetworkInterfaceSpecification> {
    Ok(InstanceNetworkInterfaceSpecification::builder()
        .set_associate_public_ip_address(n.boolean("AssociatePublicIpAddress")?)
        .set_delete_on_termination(n.boolean("DeleteOnTermination")?)
        .set_description(n.string("Description")?)
        .set_device_index(n.int("DeviceIndex")?)
        .set_groups(n.strings("Groups")?)
        .set_ipv6_address_count(n.int("Ipv6AddressCount")?)
        .set_ipv6_addresses(n.objects("Ipv6Addresses", ipv6_address)?)
        .set_network_interface_id(n.string("NetworkInterfaceId")?)
        .set_private_ip_address(n.string("PrivateIpAddress")?)
        .set_private_ip_addresses(n.objects("PrivateIpAddresses", |p| {
            Ok(PrivateIpAddressSpecification::builder()
                .set_primary(p.boolean("Primary")?)
                .set_private_ip_address(p.string("PrivateIpAddress")?)
                .build())
        })?)
        .set_secondary_private_ip_address_count(n.int("SecondaryPrivateIpAddressCount")?)
        .set_subnet_id(n.string("SubnetId")?)
        .set_associate_carrier_ip_address(n.boolean("AssociateCarrierIpAddress")?)
        .set_interface_type(n.choice("InterfaceType", INTERFACE_TYPES)?)
        .set_network_card_index(n.int("NetworkCardIndex")?)
        .set_ipv4_prefixes(n.objects("Ipv4Prefixes", |p| {
            Ok(Ipv4PrefixSpecificationRequest::builder()
                .set_ipv4_prefix(p.string("Ipv4Prefix")?)
                .build())
        })?)
        .set_ipv4_prefix_count(n.int("Ipv4PrefixCount")?)
        .set_ipv6_prefixes(n.objects("Ipv6Prefixes", |p| {
            Ok(Ipv6PrefixSpecificationRequest::builder()
                .set_ipv6_prefix(p.string("Ipv6Prefix")?)
                .build())
        })?)
        .set_ipv6_prefix_count(n.int("Ipv6PrefixCount")?)
        .set_primary_ipv6(n.boolean("PrimaryIpv6")?)
        .set_ena_srd_specification(n.object("EnaSrdSpecification", |e| {
            Ok(EnaSrdSpecificationRequest::builder()
                .set_ena_srd_enabled(e.boolean("EnaSrdEnabled")?)
                .set_ena_srd_udp_specification(e.object("EnaSrdUdpSpecification", |u| {
                    Ok(EnaSrdUdpSpecificationRequest::builder()
                        .set_ena_srd_udp_enabled(u.boolean("EnaSrdUdpEnabled")?)
                        .build())
                })?)
                .build())
        })?)
        .set_connection_tracking_specification(n.object(
            "ConnectionTrackingSpecification",
            |c| {
                Ok(ConnectionTrackingSpecificationRequest::builder()
                    .set_tcp_established_timeout(c.int("TcpEstablishedTimeout")?)
                    .set_udp_stream_timeout(c.int("UdpStreamTimeout")?)
                    .set_udp_timeout(c.int("UdpTimeout")?)
                    .build())
            },
        )?)
        .set_ena_queue_count(n.int("EnaQueueCount")?)
        .build())
}

/// The items in their first-seen order, each once.
fn distinct<'a>(items: impl IntoIterator<Item = &'a String>) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    for item in items {
        if !seen.contains(item) {
            seen.push(item.clone());
        }
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const PATH: &str = "available_node_types.efa_worker_node.node_config";

    /// The seed's worker, with its variables expanded.
    fn seed_worker() -> Value {
        json!({
            "InstanceType": "i7i.24xlarge",
            "NetworkInterfaces": [{
                "DeviceIndex": 0,
                "InterfaceType": "efa",
                "Groups": ["sg-0worker"],
                "SubnetId": "subnet-0private"
            }],
            "Placement": {"GroupName": "ray-placement-group"},
            "BlockDeviceMappings": [{
                "DeviceName": "/dev/xvda",
                "Ebs": {"VolumeSize": 300, "VolumeType": "gp3"}
            }],
            "ImageId": "ami-0x86",
            "IamInstanceProfile": {"Name": "ray-instance-profile"}
        })
    }

    #[test]
    fn the_seed_worker_maps_onto_run_instances() {
        let config = parse(&seed_worker(), PATH).expect("the seed's worker is valid");
        assert_eq!(config.instance_type(), Some("i7i.24xlarge"));
        assert_eq!(config.image_id(), Some("ami-0x86"));
        assert_eq!(config.efa_interfaces(), 1);
        assert_eq!(config.subnets(), vec!["subnet-0private".to_owned()]);
        assert_eq!(config.security_groups(), vec!["sg-0worker".to_owned()]);
        assert_eq!(config.efa_security_groups(), vec!["sg-0worker".to_owned()]);
        assert_eq!(config.placement_group(), Some("ray-placement-group"));
        assert_eq!(
            config.instance_profile(),
            Some(ProfileRef::Name("ray-instance-profile".into()))
        );
        let ebs = config
            .input
            .get_block_device_mappings()
            .as_ref()
            .expect("mappings")[0]
            .ebs()
            .expect("ebs")
            .clone();
        assert_eq!(ebs.volume_size(), Some(300));
        assert_eq!(ebs.volume_type(), Some(&VolumeType::Gp3));
        let tokens = config
            .input
            .get_metadata_options()
            .as_ref()
            .and_then(|o| o.http_tokens().cloned());
        assert_eq!(tokens, Some(HttpTokensState::Required));
    }

    #[test]
    fn the_file_may_choose_imdsv1_and_keeps_its_other_metadata_options() {
        let mut value = seed_worker();
        value["MetadataOptions"] = json!({"HttpTokens": "optional"});
        let config = parse(&value, PATH).expect("valid");
        let options = config
            .input
            .get_metadata_options()
            .clone()
            .expect("options");
        assert_eq!(options.http_tokens(), Some(&HttpTokensState::Optional));

        value["MetadataOptions"] = json!({"HttpPutResponseHopLimit": 2});
        let config = parse(&value, PATH).expect("valid");
        let options = config
            .input
            .get_metadata_options()
            .clone()
            .expect("options");
        assert_eq!(options.http_tokens(), Some(&HttpTokensState::Required));
        assert_eq!(options.http_put_response_hop_limit(), Some(2));
    }

    #[test]
    fn unknown_nested_keys_are_refused_with_their_path() {
        let mut value = seed_worker();
        value["BlockDeviceMappings"][0]["Ebs"]["VolumeSzie"] = json!(10);
        let error = parse(&value, PATH).expect_err("typo");
        assert_eq!(
            error.path,
            format!("{PATH}.BlockDeviceMappings[0].Ebs.VolumeSzie")
        );
        assert!(
            error.message.contains("did you mean `VolumeSize`"),
            "{error}"
        );
    }

    #[test]
    fn a_wrong_interface_type_lists_the_allowed_ones() {
        let mut value = seed_worker();
        value["NetworkInterfaces"][0]["InterfaceType"] = json!("EFA");
        let error = parse(&value, PATH).expect_err("wrong case");
        assert_eq!(
            error.path,
            format!("{PATH}.NetworkInterfaces[0].InterfaceType")
        );
        assert_eq!(
            error.message,
            "`EFA` is not one of: interface, efa, efa-only"
        );
    }

    #[test]
    fn keys_rayefa_owns_are_refused_with_the_reason() {
        for key in ["UserData", "MinCount", "MaxCount", "ClientToken", "DryRun"] {
            let mut value = seed_worker();
            value[key] = json!(1);
            let error = parse(&value, PATH).expect_err(key);
            assert_eq!(error.path, format!("{PATH}.{key}"));
        }
    }

    #[test]
    fn subnet_and_groups_beside_network_interfaces_are_refused() {
        let mut value = seed_worker();
        value["SecurityGroupIds"] = json!(["sg-0head"]);
        let error = parse(&value, PATH).expect_err("Ray refuses this");
        assert_eq!(error.path, format!("{PATH}.SecurityGroupIds"));
        assert!(error.message.contains("NetworkInterfaces"), "{error}");
    }

    #[test]
    fn tags_rayefa_finds_nodes_by_are_refused() {
        let mut value = seed_worker();
        value["TagSpecifications"] = json!([{
            "ResourceType": "instance",
            "Tags": [{"Key": "Name", "Value": "ok"}, {"Key": "ray-cluster-name", "Value": "x"}]
        }]);
        let error = parse(&value, PATH).expect_err("reserved tag");
        assert_eq!(error.path, format!("{PATH}.TagSpecifications[0].Tags"));
    }

    #[test]
    fn ray_subnet_ids_are_kept_in_order() {
        let value = json!({
            "InstanceType": "m7i.xlarge",
            "ImageId": "ami-0x86",
            "SubnetIds": ["subnet-a", "subnet-b"],
            "SecurityGroupIds": ["sg-0head"],
            "TagSpecifications": [{
                "ResourceType": "instance",
                "Tags": [{"Key": "team", "Value": "ml"}]
            }],
            "InstanceMarketOptions": {
                "MarketType": "spot",
                "SpotOptions": {"MaxPrice": 0.5, "ValidUntil": "2030-01-01T00:00:00Z"}
            }
        });
        let config = parse(&value, "n").expect("valid");
        assert_eq!(config.subnet_ids, vec!["subnet-a", "subnet-b"]);
        assert_eq!(config.subnets(), vec!["subnet-a", "subnet-b"]);
        assert_eq!(config.efa_interfaces(), 0);
        let spot = config
            .input
            .get_instance_market_options()
            .as_ref()
            .and_then(|m| m.spot_options())
            .expect("spot options")
            .clone();
        assert_eq!(spot.max_price(), Some("0.5"));
        assert!(spot.valid_until().is_some());
    }
}
