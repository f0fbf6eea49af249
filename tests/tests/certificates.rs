//! Certificates without files: the walkthrough's distributors serve ACM private
//! certificates and the requester trusts the AWS Private CA that issued them, as in App
//! Mesh's ingress walkthrough; the control plane exports both from ACM and ACM PCA (moto,
//! made and driven with the AWS CLI) and serves them to real Envoys over SDS on their ADS
//! streams. A renewal in ACM reaches the Envoys without a restart or a failed request;
//! ACM unreachable, the last certificate is served and status says why.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tests::moto::Moto;
use tests::{LocalMesh, Mode, TempDir, compare, copy_of_shipped, count, edit_json};

/// What the TLS server at `reach` shows for `name`, verified against `ca`: its serial and
/// issuer (`openssl s_client`, then `openssl x509`); `None` when no verified handshake.
fn served_certificate(reach: &str, name: &str, ca: &Path) -> Option<(String, String)> {
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            reach,
            "-servername",
            name,
            "-verify_return_error",
        ])
        .arg("-CAfile")
        .arg(ca)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .expect("openssl runs");
    let text = String::from_utf8_lossy(&out.stdout);
    if !text.contains("Verify return code: 0 (ok)") {
        return None;
    }
    let begin = text.find("-----BEGIN CERTIFICATE-----")?;
    let end = text.find("-----END CERTIFICATE-----")? + "-----END CERTIFICATE-----".len();
    let mut x509 = Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-issuer"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("openssl runs");
    use std::io::Write as _;
    x509.stdin
        .take()
        .expect("stdin")
        .write_all(text[begin..end].as_bytes())
        .expect("written");
    let said =
        String::from_utf8(x509.wait_with_output().expect("openssl ends").stdout).expect("text");
    let field = |f: &str| {
        said.lines()
            .find_map(|l| l.strip_prefix(f))
            .map(|v| v.trim().to_owned())
    };
    Some((field("serial=")?, field("issuer=")?))
}

/// The certificate entry named `name` in the control plane's status.
fn certificate_status<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["certificates"]
        .as_array()
        .and_then(|all| all.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("status shows certificate {name}: {status:#}"))
}

/// Waits up to `limit` for `done`, polling every 200 ms; what `done` returned last.
async fn until<T>(limit: Duration, mut done: impl AsyncFnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = done().await {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The shipped mesh, its distributors serving `certificate` (STRICT), its ingress gateway
/// serving `gateway`, and the requester and the gateway trusting `ca` for the
/// distributors' names: the shapes of App Mesh's ingress walkthrough.
fn mesh_with_acm(certificate: &str, gateway: &str, ca: &str) -> TempDir {
    let dir = copy_of_shipped("acm");
    edit_json(&dir, "mesh/virtual-gateways/ingress.json", |doc| {
        doc["spec"]["listeners"][0]["tls"] = json!({
            "mode": "STRICT",
            "certificate": {"acm": {"certificateArn": gateway}}
        });
        doc["spec"]["backendDefaults"] = trusting(ca);
    });
    for node in ["distributor-v1", "distributor-v2"] {
        edit_json(&dir, &format!("mesh/virtual-nodes/{node}.json"), |doc| {
            doc["spec"]["listeners"][0]["tls"] = json!({
                "mode": "STRICT",
                "certificate": {"acm": {"certificateArn": certificate}}
            });
        });
    }
    edit_json(&dir, "mesh/virtual-nodes/requester.json", |doc| {
        doc["spec"]["backendDefaults"] = trusting(ca);
    });
    dir
}

/// Backend defaults trusting Private CA `ca` for the distributors' names.
fn trusting(ca: &str) -> Value {
    json!({"clientPolicy": {"tls": {
        "validation": {
            "trust": {"acm": {"certificateAuthorityArns": [ca]}},
            "subjectAlternativeNames": {"match": {"exact": [
                "distributor-v1.gophers.local", "distributor-v2.gophers.local"]}}
        }
    }}})
}

/// The status of `GET https://NAME:PORT/PATH` at the published `gateway`
/// (`http://127.0.0.1:PORT`), the server checked against `ca` for `name`; 0 when no
/// verified TLS answer came.
fn https_status(gateway: &str, name: &str, path: &str, ca: &Path) -> u16 {
    let port = gateway.rsplit(':').next().expect("a port");
    tests::curl_status(&[
        "--cacert",
        &ca.display().to_string(),
        "--resolve",
        &format!("{name}:{port}:127.0.0.1"),
        &format!("https://{name}:{port}{path}"),
    ])
}

/// Calls the requester 1500 times while `change` replaces the certificate distributor-v1's
/// Envoy at `reach` serves (`first`, by serial): the new one is served within 20 s and no
/// call fails. Returns the new serial.
async fn served_anew_under_load(
    mesh: &LocalMesh,
    (reach, ca, first): (&str, &Path, &str),
    change: impl FnOnce(),
) -> String {
    let load = {
        let requester = mesh.requester.clone();
        tokio::spawn(async move { tests::compare_at(&requester, 1500, 4).await })
    };
    change();
    let (serial, _) = until(Duration::from_secs(20), async || {
        served_certificate(reach, "distributor-v1.gophers.local", ca)
            .filter(|(serial, _)| serial != first)
    })
    .await
    .expect("the new certificate is served within 20 s");
    let report = load.await.expect("the load ran");
    assert_eq!(
        report["ok"], 1500,
        "calls failed across the change: {report}"
    );
    serial
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acm_certificates_and_private_ca_trust_carry_the_mesh_and_renew_live() {
    let moto = Moto::bare(&[]);
    let work = tests::TempDir::new("acm-ca");
    let (ca, _) = moto.private_ca("gophers.local", &work);
    let certificate = moto.private_certificate(
        &ca,
        &[
            "distributor-v1.gophers.local",
            "distributor-v2.gophers.local",
        ],
    );
    let gateway_certificate = moto.private_certificate(&ca, &["ingress.gophers.local"]);
    let dir = mesh_with_acm(&certificate, &gateway_certificate, &ca);
    let mut env = moto.env.clone();
    env.push(("AWS_ENDPOINT_URL".to_owned(), moto.endpoint.clone()));
    let mesh = LocalMesh::start_with_env(
        &dir,
        Mode::Loopback,
        &["--certificate-refresh", "1s", "--cloud-map", "off"],
        &env,
    );

    // The mesh works, over TLS with the exported certificate, checked against the CA.
    let report = compare(&mesh, 200, 4).await;
    assert_eq!(report["ok"], 200, "{report}\n{}", mesh.output());
    assert!(
        count(&report, "v1") > 0.0 && count(&report, "v2") > 0.0,
        "{report}"
    );
    let status = mesh.status().await;
    let reach = mesh.reach("distributor-v1").await;
    let ca_file = work.join("ca.pem");
    let (first_serial, issuer) =
        served_certificate(&reach, "distributor-v1.gophers.local", &ca_file)
            .expect("distributor-v1's Envoy answers TLS with a certificate the CA issued");
    assert!(issuer.contains("gophers.local"), "{issuer}");
    let shown = certificate_status(&status, &certificate);
    assert_eq!(shown["served"], true, "{shown:#}");
    assert_eq!(shown["kind"], "acm-certificate");
    assert!(
        shown["certificates"][0]["serial"]
            .as_str()
            .is_some_and(|s| s.replace(':', "").eq_ignore_ascii_case(&first_serial)),
        "status shows the served certificate ({first_serial}): {shown:#}"
    );
    assert_eq!(
        shown["used_by"],
        json!(["gophermesh/distributor-v1", "gophermesh/distributor-v2"])
    );
    assert_eq!(certificate_status(&status, &ca)["served"], true);
    // Through the ingress gateway: TLS with its own certificate, then TLS again to the
    // distributors, which it trusts through the same authority.
    let gateway = mesh
        .gateway
        .clone()
        .expect("the ingress gateway is published");
    assert_eq!(
        https_status(&gateway, "ingress.gophers.local", "/distributor/", &ca_file),
        200,
        "the gateway's listener answers TLS with its ACM certificate\n{}",
        mesh.output()
    );
    assert_eq!(
        https_status(
            &gateway,
            "elsewhere.gophers.local",
            "/distributor/",
            &ca_file
        ),
        0,
        "curl checks the name: the gateway's certificate is for ingress.gophers.local only"
    );
    // The requester's Envoy checked the distributors' certificates: TLS on its side too.
    assert!(
        mesh.envoy_stat(
            "requester",
            &format!("cluster.{}.ssl.handshake", upstream_cluster(&mesh).await)
        )
        .await
            > 0,
        "the requester's Envoy made no TLS handshake"
    );

    // ACM renews the certificate under the same ARN: the Envoys serve the new one within
    // seconds, and no request fails meanwhile.
    let renewed = served_anew_under_load(&mesh, (&reach, &ca_file, &first_serial), || {
        moto.aws(&[
            "acm",
            "renew-certificate",
            "--certificate-arn",
            &certificate,
        ]);
    })
    .await;
    let status = mesh.status().await;
    assert_eq!(
        status["processes"]
            .as_array()
            .expect("processes")
            .iter()
            .map(|p| p["restarts"].as_u64().unwrap_or(0))
            .sum::<u64>(),
        0,
        "nothing was restarted: {status:#}"
    );
    eprintln!("renewed: serial {first_serial} -> {renewed}");
    for (node, envoy) in status["envoys"].as_object().expect("envoys") {
        assert!(
            envoy["last_nack"].is_null(),
            "{node}'s Envoy refused a configuration: {envoy:#}"
        );
    }

    // ACM unreachable: the last certificate stays served, status says what failed.
    moto.hang();
    let failed = until(Duration::from_secs(30), async || {
        let status = mesh.status().await;
        let shown = certificate_status(&status, &certificate).clone();
        shown["error"].is_string().then_some(shown)
    })
    .await;
    moto.resume();
    let shown = failed.expect("status reports the failed read within 30 s");
    assert_eq!(shown["served"], true, "{shown:#}");
    assert!(
        shown["error"]
            .as_str()
            .is_some_and(|e| e.contains(&certificate)),
        "the failure names the ARN: {shown:#}"
    );
    let report = compare(&mesh, 100, 4).await;
    assert_eq!(report["ok"], 100, "{report}");
    let (cli_exit, text) = mesh.cli(&["status"]);
    assert_eq!(cli_exit, 0, "{text}");
    assert!(
        text.contains("certificates (served over SDS):") && text.contains(&certificate),
        "{text}"
    );

    // A public certificate cannot be served (ACM does not export its key): status says so,
    // naming the ARN, and what was served goes on.
    let public = moto.aws(&[
        "acm",
        "request-certificate",
        "--domain-name",
        "distributor-v2.gophers.local",
        "--query",
        "CertificateArn",
        "--output",
        "text",
    ]);
    let node = dir.join("mesh/virtual-nodes/distributor-v2.json");
    edit_json(&dir, "mesh/virtual-nodes/distributor-v2.json", |doc| {
        doc["spec"]["listeners"][0]["tls"]["certificate"]["acm"]["certificateArn"] = json!(public);
    });
    let (code, text) = mesh.cli(&["apply", "-f", &node.display().to_string()]);
    assert_eq!(code, 0, "{text}");
    let refused = until(Duration::from_secs(20), async || {
        let status = mesh.status().await;
        status["certificates"]
            .as_array()?
            .iter()
            .find(|c| c["name"] == public.as_str())
            .and_then(|c| c["error"].as_str().map(str::to_owned))
    })
    .await
    .expect("status reports the public certificate");
    assert!(
        refused.contains(&public) && refused.contains("public"),
        "{refused}"
    );
    let report = compare(&mesh, 100, 4).await;
    assert_eq!(
        report["ok"], 100,
        "distributor-v2 goes on with its last listener: {report}"
    );
}

/// The name of the requester's Envoy's cluster to distributor-v1.
async fn upstream_cluster(mesh: &LocalMesh) -> String {
    let text = mesh.envoy_admin("requester", "/clusters?format=json").await;
    let clusters: Value = serde_json::from_str(&text).expect("json");
    clusters["cluster_statuses"]
        .as_array()
        .expect("clusters")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .find(|n| n.contains("distributor-v1"))
        .unwrap_or_else(|| panic!("a cluster to distributor-v1: {text}"))
        .to_owned()
}

/// SDS secrets by name (`certificate.sds`, `trust.sds`), served by an SDS server beside
/// the Envoys on the unix socket their containers name (`APPMESH_SDS_SOCKET_PATH`, as with
/// SPIRE): the mesh runs over TLS with them, and a rotated certificate is served within
/// seconds, no request failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_of_a_local_sds_server_carry_the_mesh_and_rotate() {
    let dir = copy_of_shipped("sds");
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs).expect("certs dir");
    let names = [
        "DNS:distributor-v1.gophers.local",
        "DNS:distributor-v2.gophers.local",
    ];
    tests::serve::issue(&certs, &[("distributor", &names[..])]);
    // A unix socket's path has at most 107 bytes: a short one of this test's own.
    let socket = std::path::PathBuf::from(format!("/tmp/gm-sds-{}.sock", std::process::id()));
    let sds = tests::sds::LocalSds::start(&socket);
    sds.certificate(
        "distributor",
        &certs.join("distributor.pem"),
        &certs.join("distributor.key"),
    );
    sds.trust("gophers-ca", &certs.join("ca.pem"));
    for node in ["distributor-v1", "distributor-v2"] {
        edit_json(&dir, &format!("mesh/virtual-nodes/{node}.json"), |doc| {
            doc["spec"]["listeners"][0]["tls"] = json!({
                "mode": "STRICT",
                "certificate": {"sds": {"secretName": "distributor"}}
            });
        });
    }
    edit_json(&dir, "mesh/virtual-nodes/requester.json", |doc| {
        doc["spec"]["backendDefaults"] = json!({"clientPolicy": {"tls": {"validation": {
            "trust": {"sds": {"secretName": "gophers-ca"}},
            "subjectAlternativeNames": {"match": {"exact": [
                "distributor-v1.gophers.local", "distributor-v2.gophers.local"]}}
        }}}});
    });
    for task in ["requester", "distributor-v1", "distributor-v2"] {
        edit_json(&dir, &format!("taskdefs/{task}.json"), |doc| {
            let envoy = doc["containerDefinitions"]
                .as_array_mut()
                .expect("containers")
                .iter_mut()
                .find(|c| c["name"] == "envoy")
                .expect("the envoy container");
            envoy["environment"]
                .as_array_mut()
                .expect("environment")
                .push(json!({"name": "APPMESH_SDS_SOCKET_PATH", "value": socket.display().to_string()}));
        });
    }
    let mesh = LocalMesh::start(&dir);
    let report = compare(&mesh, 200, 4).await;
    assert_eq!(report["ok"], 200, "{report}\n{}", mesh.output());
    assert!(count(&report, "v1") > 0.0, "{report}");
    let reach = mesh.reach("distributor-v1").await;
    let ca = certs.join("ca.pem");
    let (first, _) = served_certificate(&reach, "distributor-v1.gophers.local", &ca)
        .expect("distributor-v1's Envoy answers TLS with the SDS server's certificate");

    // Rotation: a new key and certificate under the same secret name.
    served_anew_under_load(&mesh, (&reach, &ca, &first), || {
        tests::serve::issue_leaf(&certs, "distributor", &names);
        sds.certificate(
            "distributor",
            &certs.join("distributor.pem"),
            &certs.join("distributor.key"),
        );
    })
    .await;
    drop(sds);
    let _ = std::fs::remove_file(&socket);
}
