"""The mesh certificate authority inside ``remora discovery``.

One job per module:

* :mod:`.authority` — the CA key material (Istio's ``cacerts`` file names) and signing a
  workload certificate for an identity that has already been decided;
* :mod:`.csr` — pure: which SPIFFE identity a CSR asks for, and whether it may have it;
* :mod:`.authn` — who is calling: the projected service-account token, checked by a
  TokenReview against the apiserver with the audience;
* :mod:`.service` — the gRPC edge, Istio's ``IstioCertificateService/CreateCertificate``;
* :mod:`.secrets` — where the CA comes from in a cluster (``cacerts``, or a self-signed root
  kept in ``istio-ca-secret``);
* :mod:`.rootcert` — publishing the root as ``istio-ca-root-cert`` in every namespace.
"""
