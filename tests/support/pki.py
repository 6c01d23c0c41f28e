"""A throwaway PKI for TLS tests: the simulators' (simulators/pki.py), which the demo's HTTPS
link uses too."""

from simulators.pki import CertificateAuthority, Issued

__all__ = ["CertificateAuthority", "Issued"]
