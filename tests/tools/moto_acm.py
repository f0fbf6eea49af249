"""ACM private certificates as ACM issues them, over moto's ACM and ACM PCA models.

moto (5.2) answers `RequestCertificate --certificate-authority-arn` with a certificate that
signs itself under an "Amazon" issuer, whatever the authority, and has no
`RenewCertificate`. A mesh whose listeners serve ACM private certificates and whose clients
trust the issuing authority (the App Mesh ingress walkthrough's shape) cannot be tested
against that: no client would accept the certificate. `install()` changes two things, on
moto's own state, with the shapes of botocore's acm model (the AWS CLI is the client):

- a private certificate is issued by the authority named: signed by its key, its issuer the
  authority's subject, its chain the authority's certificate (and the chain above it), as
  ACM does; requesting one from an authority that is not ACTIVE is refused, as ACM refuses;
- `RenewCertificate` renews a private certificate under the same ARN (a new key, serial and
  validity from the same authority), as ACM's managed renewal does; any other certificate is
  refused, as ACM refuses.
"""

import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from moto.acm import models as acm_models
from moto.acm.exceptions import AWSValidationException
from moto.acm.responses import AWSCertificateManagerResponse
from moto.acmpca.models import acmpca_backends
from moto.core.responses import EmptyResult

_moto_generate_cert = acm_models.CertBundle.generate_cert.__func__


def _authority(arn: str):
    """The ACTIVE authority `arn` of moto's ACM PCA, or ACM's refusal."""
    parts = arn.split(":")
    if len(parts) != 6 or parts[2] != "acm-pca":
        raise AWSValidationException(f"{arn} is not a certificate authority ARN")
    region, account = parts[3], parts[4]
    authority = acmpca_backends[account][region].certificate_authorities.get(arn)
    if authority is None:
        raise AWSValidationException(f"Certificate authority {arn} does not exist")
    if authority.status != "ACTIVE":
        raise AWSValidationException(
            f"Certificate authority {arn} is {authority.status}, not ACTIVE"
        )
    return authority


def _issue(authority, domain_name: str, sans):
    """A new key and a certificate for `domain_name` (and `sans`) signed by `authority`:
    (certificate PEM, key PEM, chain PEM)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    names = sorted(set(sans or []) | {domain_name})
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domain_name)]))
        .issuer_name(authority.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=395))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(authority.key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.TraditionalOpenSSL,
        encryption_algorithm=serialization.NoEncryption(),
    )
    chain = authority.certificate_bytes + (authority.certificate_chain or b"")
    return certificate.public_bytes(serialization.Encoding.PEM), key_pem, chain


def _generate_cert(cls, domain_name, account_id, region, sans=None, cert_authority_arn=None):
    if cert_authority_arn is None:
        return _moto_generate_cert(cls, domain_name, account_id, region, sans, cert_authority_arn)
    authority = _authority(cert_authority_arn)
    certificate, key, chain = _issue(authority, domain_name, sans)
    bundle = cls(
        account_id=account_id,
        certificate=certificate,
        private_key=key,
        chain=chain,
        region=region,
        cert_type="PRIVATE",
        cert_status="ISSUED",
        cert_authority_arn=cert_authority_arn,
    )
    # moto's constructor appends Amazon's root to every chain; a private certificate's
    # chain is its authority's.
    bundle.chain = chain
    return bundle


def _renew_certificate(self):
    arn = self._get_param("CertificateArn")
    bundle = self.acm_backend.get_certificate(arn)
    if bundle.type != "PRIVATE":
        raise AWSValidationException(
            f"Certificate {arn} is not a private certificate; only private certificates can be renewed on request"
        )
    authority = _authority(bundle.cert_authority_arn)
    certificate, key, chain = _issue(authority, bundle.common_name, bundle.sans)
    bundle.cert, bundle.key, bundle.chain = certificate, key, chain
    bundle._key = bundle.validate_pk()
    bundle._cert = bundle.validate_certificate()
    return EmptyResult()


def install() -> None:
    """Makes private certificates the authority's, and adds RenewCertificate (unless this
    moto serves it itself), before the server starts."""
    acm_models.CertBundle.generate_cert = classmethod(_generate_cert)
    if not hasattr(AWSCertificateManagerResponse, "renew_certificate"):
        AWSCertificateManagerResponse.renew_certificate = _renew_certificate
