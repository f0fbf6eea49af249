//! moto, the local fake of the AWS APIs, for the deploy-script tests.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use std::io::{BufRead, BufReader};

use crate::{Guard, bin, repo_root, tool};

/// What `gophermesh render taskdefs` needs.
pub const RENDER_ENV: [(&str, &str); 3] = [
    ("AWS_ACCOUNT_ID", "111122223333"),
    ("AWS_REGION", "us-east-1"),
    (
        "IMAGE_REPOSITORY",
        "111122223333.dkr.ecr.us-east-1.amazonaws.com",
    ),
];

/// moto, started on a free loopback port, with a VPC, a subnet and a security group.
#[derive(Debug)]
pub struct Moto {
    _server: Guard,
    pub endpoint: String,
    pub env: Vec<(String, String)>,
}

impl Moto {
    /// moto with a VPC, a subnet and a security group (`VPC_ID`, `SUBNETS`,
    /// `SECURITY_GROUPS` in [`Moto::env`]) and what `render taskdefs` needs.
    pub fn start() -> Self {
        let mut moto = Self::bare(&[]);
        moto.add_network();
        moto
    }

    /// Stops moto's server (SIGSTOP): it accepts connections and answers nothing, as a
    /// hung DynamoDB; [`Moto::resume`] lets it go on.
    pub fn hang(&self) {
        self.signal("-STOP");
    }

    /// Lets a hung server go on (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, which: &str) {
        let sent = Command::new("kill")
            .args([which, &self._server.0.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "kill {which} moto");
    }

    /// moto alone, its server started with `server_env` (e.g.
    /// `INITIAL_NO_AUTH_ACTION_COUNT`, which makes it check credentials after that many
    /// calls).
    pub fn bare(server_env: &[(&str, &str)]) -> Self {
        // Port 0: moto (werkzeug) binds a free port and says which on stderr. One request
        // at a time, as tests/tools/moto_serialized.py says why.
        let mut child = Command::new(tool("python3"))
            .arg(repo_root().join("tests/tools/moto_serialized.py"))
            .args(["127.0.0.1", "0"])
            .envs(server_env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("moto_server starts");
        let stderr = child.stderr.take().expect("stderr is piped");
        let server = Guard(child);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line
                    .split_once("Running on ")
                    .map(|(_, u)| u.trim().to_owned())
                {
                    let _ = tx.send(url);
                }
            }
        });
        let endpoint = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("moto_server says where it listens within 30 s");
        Self {
            _server: server,
            endpoint,
            env: vec![
                ("AWS_ACCESS_KEY_ID".into(), "testing".into()),
                ("AWS_SECRET_ACCESS_KEY".into(), "testing".into()),
                ("AWS_DEFAULT_REGION".into(), "us-east-1".into()),
                ("AWS_PAGER".into(), String::new()),
            ],
        }
    }

    fn add_network(&mut self) {
        let moto = self;
        let vpc = moto.aws(&[
            "ec2",
            "create-vpc",
            "--cidr-block",
            "10.0.0.0/16",
            "--query",
            "Vpc.VpcId",
            "--output",
            "text",
        ]);
        let subnet = moto.aws(&[
            "ec2",
            "create-subnet",
            "--vpc-id",
            &vpc,
            "--cidr-block",
            "10.0.1.0/24",
            "--query",
            "Subnet.SubnetId",
            "--output",
            "text",
        ]);
        let sg = moto.aws(&[
            "ec2",
            "create-security-group",
            "--group-name",
            "gophers",
            "--description",
            "gophers",
            "--vpc-id",
            &vpc,
            "--query",
            "GroupId",
            "--output",
            "text",
        ]);
        moto.env.extend([
            ("VPC_ID".into(), vpc),
            ("SUBNETS".into(), subnet),
            ("SECURITY_GROUPS".into(), sg),
        ]);
        moto.env.extend(
            RENDER_ENV
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
    }

    pub fn path_env(&self) -> String {
        let venv = repo_root().join(".venv/bin");
        let aws_dir = tool("aws").parent().map(Path::to_path_buf).unwrap_or(venv);
        format!(
            "{}:{}:{}",
            aws_dir.display(),
            crate::bin_dir().display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }

    /// Runs the AWS CLI against moto; returns trimmed stdout, panics on failure.
    pub fn aws(&self, args: &[&str]) -> String {
        let out = Command::new(tool("aws"))
            .arg("--endpoint-url")
            .arg(&self.endpoint)
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .expect("aws runs");
        assert!(
            out.status.success(),
            "aws {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// A root authority of AWS Private CA named `common_name`, made ACTIVE as the console
    /// makes one (its CSR signed by itself, the certificate imported): its ARN and
    /// certificate (PEM, also in `dir/ca.pem`).
    pub fn private_ca(&self, common_name: &str, dir: &Path) -> (String, String) {
        let config = serde_json::json!({
            "KeyAlgorithm": "RSA_2048",
            "SigningAlgorithm": "SHA256WITHRSA",
            "Subject": {"CommonName": common_name, "Organization": "Gophers"}
        })
        .to_string();
        let ca = self.aws(&[
            "acm-pca",
            "create-certificate-authority",
            "--certificate-authority-type",
            "ROOT",
            "--certificate-authority-configuration",
            &config,
            "--query",
            "CertificateAuthorityArn",
            "--output",
            "text",
        ]);
        let csr = dir.join("ca.csr");
        let text = self.aws(&[
            "acm-pca",
            "get-certificate-authority-csr",
            "--certificate-authority-arn",
            &ca,
            "--output",
            "text",
        ]);
        std::fs::write(&csr, text + "\n").expect("CSR written");
        let issued = self.aws(&[
            "acm-pca",
            "issue-certificate",
            "--certificate-authority-arn",
            &ca,
            "--csr",
            &format!("fileb://{}", csr.display()),
            "--signing-algorithm",
            "SHA256WITHRSA",
            "--template-arn",
            "arn:aws:acm-pca:::template/RootCACertificate/V1",
            "--validity",
            "Value=3650,Type=DAYS",
            "--query",
            "CertificateArn",
            "--output",
            "text",
        ]);
        let pem = self.aws(&[
            "acm-pca",
            "get-certificate",
            "--certificate-authority-arn",
            &ca,
            "--certificate-arn",
            &issued,
            "--query",
            "Certificate",
            "--output",
            "text",
        ]) + "\n";
        let file = dir.join("ca.pem");
        std::fs::write(&file, &pem).expect("CA written");
        self.aws(&[
            "acm-pca",
            "import-certificate-authority-certificate",
            "--certificate-authority-arn",
            &ca,
            "--certificate",
            &format!("fileb://{}", file.display()),
        ]);
        (ca, pem)
    }

    /// An ACM private certificate for `names` (the first its domain name) issued by
    /// authority `ca`: its ARN.
    pub fn private_certificate(&self, ca: &str, names: &[&str]) -> String {
        let mut args = vec![
            "acm",
            "request-certificate",
            "--domain-name",
            names[0],
            "--certificate-authority-arn",
            ca,
        ];
        if names.len() > 1 {
            args.push("--subject-alternative-names");
            args.extend_from_slice(names);
        }
        args.extend_from_slice(&["--query", "CertificateArn", "--output", "text"]);
        self.aws(&args)
    }

    /// Runs a deploy script with `--endpoint-url` moto; returns its output.
    pub fn script(&self, name: &str, args: &[&str]) -> String {
        let mut all = vec!["--endpoint-url", self.endpoint.as_str()];
        all.extend_from_slice(args);
        self.run_script(name, &all, &[])
    }

    /// Runs a deploy script with no `--endpoint-url`: App Mesh calls go to `appmesh` (the
    /// local control plane's API) through `AWS_ENDPOINT_URL_APP_MESH`, everything else to
    /// moto through `AWS_ENDPOINT_URL`, as the AWS CLI reads them.
    pub fn script_routed(&self, name: &str, args: &[&str], appmesh: &str) -> String {
        self.run_script(
            name,
            args,
            &[
                ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
                ("AWS_ENDPOINT_URL_APP_MESH", appmesh),
            ],
        )
    }

    fn run_script(&self, name: &str, args: &[&str], env: &[(&str, &str)]) -> String {
        let out = Command::new(repo_root().join("deploy").join(name))
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(env.iter().copied())
            .env("PATH", self.path_env())
            .env("GOPHERMESH", bin("gophermesh"))
            .output()
            .expect("script runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "deploy/{name} {args:?} failed:\n{text}"
        );
        text
    }
}
