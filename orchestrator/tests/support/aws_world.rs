//! The seed guide's AWS account, made in a moto of the test's own, with the recording proxy in
//! front: a VPC tagged `Name=RayVPC` (127.0.0.0/16, so instances get loopback "private"
//! addresses), a private subnet tagged `Name=Ray-Private-Subnet`, the security groups
//! `RayHeadSG` and `RayWorkerSG`, and the instance profile `ray-instance-profile` holding the
//! role `ray-node-role` (docs/aws.md's recipe). The
//! `rayefa` binary runs against it through `AWS_ENDPOINT_URL`, with the seed guide's shell
//! variables set, as a user who followed the guide's step 1 would have them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use aws_sdk_ec2::types::{
    Filter, Instance, InstanceAttributeName, ResourceType, Tag, TagSpecification,
};
use base64::Engine;

use super::aws_proxy::Ec2Proxy;
use super::moto::Moto;

/// The seed guide's region.
pub const REGION: &str = "ap-northeast-1";

/// The seed guide's cluster file, exactly as the guide writes it.
pub const SEED_CLUSTER_FILE: &str = include_str!("../fixtures/aws/cluster-efa.yaml");

/// What to leave out of the account, to provoke findings.
#[derive(Debug, Clone, Copy, Default)]
pub struct Omit {
    /// No `ray-instance-profile`.
    pub instance_profile: bool,
    /// `ray-instance-profile` without its role `ray-node-role`.
    pub profile_role: bool,
}

/// A seeded account.
#[derive(Debug)]
pub struct World {
    /// The proxy `rayefa` talks to.
    pub proxy: Ec2Proxy,
    /// moto itself, for the test's own look at the account.
    pub moto: Moto,
    /// Scratch files.
    pub dir: tempfile::TempDir,
    /// `VPC_ID`
    pub vpc_id: String,
    /// `PRIV_SUBNET_ID`
    pub subnet_id: String,
    /// `HEAD_SG_ID`
    pub head_sg: String,
    /// `WORKER_SG_ID`
    pub worker_sg: String,
    /// `X86_AMI_ID`
    pub x86_ami: String,
    /// `ARM_AMI_ID`
    pub arm_ami: String,
    runtime: tokio::runtime::Runtime,
    extra_env: Vec<(String, String)>,
}

/// What a run of `rayefa` printed and how it ended.
#[derive(Debug)]
pub struct Run {
    /// The exit code.
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    fn from_output(output: Output) -> Run {
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Panics with both streams unless the exit code is `code`.
    pub fn expect_code(self, code: i32) -> Run {
        assert_eq!(
            self.code, code,
            "exit code\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

impl World {
    /// The seed guide's account with the private subnet `127.0.1.0/24`.
    pub fn seed() -> World {
        World::build("127.0.1.0/24", Omit::default())
    }

    /// The account with the private subnet `subnet_cidr` (inside 127.0.0.0/16), and without
    /// what `omit` says.
    pub fn build(subnet_cidr: &str, omit: Omit) -> World {
        World::build_in("127.0.0.0/16", subnet_cidr, omit)
    }

    /// The account with the VPC `vpc_cidr` and its private subnet `subnet_cidr`.
    pub fn build_in(vpc_cidr: &str, subnet_cidr: &str, omit: Omit) -> World {
        let moto = Moto::start();
        let proxy = Ec2Proxy::start(&moto.endpoint());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("test runtime");
        let seeded = runtime.block_on(seed_account(&moto.endpoint(), vpc_cidr, subnet_cidr, omit));
        let dir = tempfile::tempdir().expect("scratch directory");
        // Empty AWS files, so that nothing of the machine's own AWS setup takes part.
        for name in ["aws-config", "aws-credentials"] {
            std::fs::write(dir.path().join(name), "").expect("an empty AWS file");
        }
        World {
            proxy,
            moto,
            dir,
            vpc_id: seeded.vpc_id,
            subnet_id: seeded.subnet_id,
            head_sg: seeded.head_sg,
            worker_sg: seeded.worker_sg,
            x86_ami: seeded.x86_ami,
            arm_ami: seeded.arm_ami,
            runtime,
            extra_env: Vec::new(),
        }
    }

    /// Overrides one of the seed guide's variables (or sets another) for later runs.
    pub fn set_env(&mut self, name: &str, value: &str) {
        self.extra_env.retain(|(n, _)| n != name);
        self.extra_env.push((name.to_owned(), value.to_owned()));
    }

    /// Runs a future on the world's runtime (for SDK calls straight to moto).
    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// An EC2 client straight to moto, past the proxy, for the test's own look.
    pub fn ec2(&self) -> aws_sdk_ec2::Client {
        let config = self.block_on(sdk_config(&self.moto.endpoint()));
        aws_sdk_ec2::Client::new(&config)
    }

    /// Writes `text` as a file in the scratch directory.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("writing a scratch file");
        path
    }

    /// The seed guide's cluster file in the scratch directory.
    pub fn seed_file(&self) -> PathBuf {
        self.write("cluster-efa.yaml", SEED_CLUSTER_FILE)
    }

    /// `rayefa ARGS` against the proxy, with the seed guide's variables set.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_rayefa"));
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("AWS_ENDPOINT_URL", self.proxy.endpoint())
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", REGION)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", self.dir.path().join("aws-config"))
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                self.dir.path().join("aws-credentials"),
            )
            .env("CLUSTER_NAME", "ray-on-aws")
            .env("VPC_ID", &self.vpc_id)
            .env("PRIV_SUBNET_ID", &self.subnet_id)
            .env("HEAD_SG_ID", &self.head_sg)
            .env("WORKER_SG_ID", &self.worker_sg)
            .env("X86_AMI_ID", &self.x86_ami)
            .env("ARM_AMI_ID", &self.arm_ami);
        for (name, value) in &self.extra_env {
            command.env(name, value);
        }
        command
    }

    /// Runs `rayefa ARGS` to the end.
    pub fn run(&self, args: &[&str]) -> Run {
        Run::from_output(self.command(args).output().expect("running rayefa"))
    }

    /// `rayefa ARGS FILE` for a file path.
    pub fn run_on(&self, args: &[&str], file: &Path) -> Run {
        let file = file.to_str().expect("UTF-8 scratch path");
        let mut all: Vec<&str> = args.to_vec();
        all.push(file);
        self.run(&all)
    }

    /// Adds the self-referencing all-traffic rule to `group` in one direction, straight in moto.
    pub fn add_self_rule(&self, group: &str, egress: bool) {
        let ec2 = self.ec2();
        let permission = aws_sdk_ec2::types::IpPermission::builder()
            .ip_protocol("-1")
            .user_id_group_pairs(
                aws_sdk_ec2::types::UserIdGroupPair::builder()
                    .group_id(group)
                    .build(),
            )
            .build();
        let added = if egress {
            self.block_on(
                ec2.authorize_security_group_egress()
                    .group_id(group)
                    .ip_permissions(permission)
                    .send(),
            )
            .map(|_| ())
            .map_err(|e| e.to_string())
        } else {
            self.block_on(
                ec2.authorize_security_group_ingress()
                    .group_id(group)
                    .ip_permissions(permission)
                    .send(),
            )
            .map(|_| ())
            .map_err(|e| e.to_string())
        };
        added.expect("adding a self rule in moto");
    }

    /// Makes the account ready as `rayefa prepare` would, without going through rayefa.
    pub fn prepared(&self) {
        self.proxy
            .add_placement_group("ray-placement-group", "cluster");
        self.add_self_rule(&self.worker_sg, false);
        self.add_self_rule(&self.worker_sg, true);
    }

    /// Another subnet of the VPC, in `zone`.
    pub fn add_subnet(&self, cidr: &str, zone: &str) -> String {
        let ec2 = self.ec2();
        let vpc = self.vpc_id.clone();
        self.block_on(async move {
            ec2.create_subnet()
                .vpc_id(vpc)
                .cidr_block(cidr)
                .availability_zone(zone)
                .send()
                .await
                .expect("creating a subnet in moto")
                .subnet()
                .and_then(|s| s.subnet_id())
                .expect("subnet id")
                .to_owned()
        })
    }

    /// Creates the S3 bucket `name` in the world's region, straight in moto (which takes the
    /// service from the credential scope and checks no signature).
    pub fn create_bucket(&self, name: &str) {
        let status = self.s3_straight(
            reqwest::Method::PUT,
            name,
            format!(
                "<CreateBucketConfiguration><LocationConstraint>{REGION}</LocationConstraint>\
                 </CreateBucketConfiguration>"
            ),
        );
        assert_eq!(
            status.0, 200,
            "creating bucket {name} in moto: {}",
            status.1
        );
    }

    /// The object `key` of `bucket`, straight from moto; `None` when it has none.
    pub fn s3_object(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        let (status, body) = self.s3_straight(
            reqwest::Method::GET,
            &format!("{bucket}/{key}"),
            String::new(),
        );
        (status == 200).then(|| body.into_bytes())
    }

    fn s3_straight(&self, method: reqwest::Method, path: &str, body: String) -> (u16, String) {
        let url = format!("{}/{path}", self.moto.endpoint());
        self.block_on(async move {
            let response = reqwest::Client::new()
                .request(method, url)
                .header(
                    "authorization",
                    format!(
                        "AWS4-HMAC-SHA256 Credential=testing/20260101/{REGION}/s3/aws4_request, \
                         SignedHeaders=host, Signature=0"
                    ),
                )
                .body(body)
                .send()
                .await
                .expect("moto answers");
            let status = response.status().as_u16();
            (status, response.text().await.unwrap_or_default())
        })
    }

    /// The cluster's instances that are not terminated, straight from moto.
    pub fn live_instances(&self) -> Vec<aws_sdk_ec2::types::Instance> {
        let ec2 = self.ec2();
        self.block_on(async move {
            describe_instances(&ec2, vec![live_filter()])
                .await
                .expect("describing instances in moto")
        })
    }
}

/// An SDK configuration for moto with fake credentials.
pub async fn sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new(REGION))
        .credentials_provider(aws_sdk_ec2::config::Credentials::new(
            "testing", "testing", None, None, "tests",
        ))
        .load()
        .await
}

/// The filter for instances that are pending or running: what a machine stands in for.
pub fn live_filter() -> Filter {
    Filter::builder()
        .name("instance-state-name")
        .values("pending")
        .values("running")
        .build()
}

/// Every instance moto describes under `filters` (all of them without any), across
/// reservations.
pub async fn describe_instances(
    ec2: &aws_sdk_ec2::Client,
    filters: Vec<Filter>,
) -> Result<Vec<Instance>, aws_sdk_ec2::Error> {
    let out = ec2
        .describe_instances()
        .set_filters(Some(filters).filter(|f| !f.is_empty()))
        .send()
        .await?;
    Ok(out
        .reservations()
        .iter()
        .flat_map(|r| r.instances().iter().cloned())
        .collect())
}

/// The user data instance `id` was launched with, decoded.
pub async fn user_data(ec2: &aws_sdk_ec2::Client, id: &str) -> String {
    let out = ec2
        .describe_instance_attribute()
        .instance_id(id)
        .attribute(InstanceAttributeName::UserData)
        .send()
        .await
        .expect("reading user data from moto");
    let encoded = out
        .user_data()
        .and_then(|v| v.value())
        .unwrap_or_default()
        .to_owned();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .expect("user data is base64");
    String::from_utf8(bytes).expect("user data is UTF-8")
}

struct Seeded {
    vpc_id: String,
    subnet_id: String,
    head_sg: String,
    worker_sg: String,
    x86_ami: String,
    arm_ami: String,
}

fn name_tag(resource: ResourceType, name: &str) -> TagSpecification {
    TagSpecification::builder()
        .resource_type(resource)
        .tags(Tag::builder().key("Name").value(name).build())
        .build()
}

async fn seed_account(endpoint: &str, vpc_cidr: &str, subnet_cidr: &str, omit: Omit) -> Seeded {
    let config = sdk_config(endpoint).await;
    let ec2 = aws_sdk_ec2::Client::new(&config);
    let vpc_id = ec2
        .create_vpc()
        .cidr_block(vpc_cidr)
        .tag_specifications(name_tag(ResourceType::Vpc, "RayVPC"))
        .send()
        .await
        .expect("creating the VPC")
        .vpc()
        .and_then(|v| v.vpc_id())
        .expect("VPC id")
        .to_owned();
    let subnet_id = ec2
        .create_subnet()
        .vpc_id(&vpc_id)
        .cidr_block(subnet_cidr)
        .availability_zone(format!("{REGION}a"))
        .tag_specifications(name_tag(ResourceType::Subnet, "Ray-Private-Subnet"))
        .send()
        .await
        .expect("creating the private subnet")
        .subnet()
        .and_then(|s| s.subnet_id())
        .expect("subnet id")
        .to_owned();
    let mut groups = Vec::new();
    for name in ["RayHeadSG", "RayWorkerSG"] {
        groups.push(
            ec2.create_security_group()
                .group_name(name)
                .description(name)
                .vpc_id(&vpc_id)
                .send()
                .await
                .expect("creating a security group")
                .group_id()
                .expect("group id")
                .to_owned(),
        );
    }
    if !omit.instance_profile {
        let iam = aws_sdk_iam::Client::new(&config);
        iam.create_instance_profile()
            .instance_profile_name("ray-instance-profile")
            .send()
            .await
            .expect("creating the instance profile");
        if !omit.profile_role {
            iam.create_role()
                .role_name("ray-node-role")
                .assume_role_policy_document(
                    r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#,
                )
                .send()
                .await
                .expect("creating the node role");
            iam.add_role_to_instance_profile()
                .instance_profile_name("ray-instance-profile")
                .role_name("ray-node-role")
                .send()
                .await
                .expect("adding the role to the instance profile");
        }
    }
    let amis = aws_sdk_ssm::Client::new(&config)
        .get_parameters()
        .names("/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64")
        .names("/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-arm64")
        .send()
        .await
        .expect("reading the AMI parameters");
    let ami = |suffix: &str| {
        amis.parameters()
            .iter()
            .find(|p| p.name().is_some_and(|n| n.ends_with(suffix)))
            .and_then(|p| p.value())
            .expect("moto knows the AL2023 parameters")
            .to_owned()
    };
    Seeded {
        vpc_id,
        subnet_id,
        head_sg: groups[0].clone(),
        worker_sg: groups[1].clone(),
        x86_ami: ami("x86_64"),
        arm_ami: ami("arm64"),
    }
}
